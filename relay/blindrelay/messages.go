package blindrelay

import (
	"fmt"

	"github.com/keytunnel/keytunnel/internal/compact"
)

// Protocol is the protomux protocol name of the blind-relay channel.
const Protocol = "blind-relay"

// TokenSize is the size of a pairing token.
const TokenSize = 32

// Token is the secret two peers agree on out of band (hyperdht carries it in
// the handshake payload's relayThrough); the relay pairs the two requests
// that present the same token.
type Token [TokenSize]byte

// Message types, in the reference's addMessage order.
const (
	TypePair   = 0
	TypeUnpair = 1
)

// flagInitiator is bit 0 of the flags bitfield.
const flagInitiator = 0x01

// Pair is the pair message (type 0), sent by a peer to ask for a relayed
// stream and by the relay to answer with the stream it allocated.
//
// Wire layout (compact-encoding, little-endian):
//
//	byte 0        flags: bitfield(7), one byte; bit 0 = IsInitiator, the
//	              other bits are ignored on decode and sent as 0.
//	              Decoders also accept the length-prefixed bitfield forms
//	              fd+2, fe+4 and ff+8 bytes, of which only the first byte
//	              after the prefix counts (compact-encoding-bitfield with
//	              n < 8 keeps just byte 0).
//	bytes 1..32   token, fixed32
//	then          id: uint (one byte < 0xfd, else fd+u16, fe+u32, ff+u64).
//	              In a request the sender's own UDX stream id; in the reply
//	              the relay's stream for that sender to connect to.
//	then          seq: uint, the initial stream seq; always 0, unused.
//
// Examples (from interop/blindrelay-vectors.js):
//
//	initiator, token ab×32, id 300: 01 ab…ab fd2c01 00
//	responder, token ab×32, id 5:   00 ab…ab 05 00
//
// ID and Seq are decoded as the full uint64 the encoding allows; whether an
// ID is a valid 32-bit UDX stream id is for the protocol layer to decide
// (ValidStreamID), so that the codec round-trips every input Node accepts.
type Pair struct {
	IsInitiator bool
	Token       Token
	ID          uint64
	Seq         uint64
}

// Unpair is the unpair message (type 1): cancel a pending pairing, or tear
// down the relayed streams of a matched one.
//
// Wire layout:
//
//	byte 0        flags: bitfield(7), reserved, sent as 0; the same
//	              length-prefixed forms as in Pair are accepted
//	bytes 1..32   token, fixed32
//
// Example: 00 ab…ab
type Unpair struct {
	Token Token
}

// AppendPair appends the encoding of p to b.
func AppendPair(b []byte, p Pair) []byte {
	var flags byte
	if p.IsInitiator {
		flags |= flagInitiator
	}
	b = append(b, flags)
	b = append(b, p.Token[:]...)
	b = compact.AppendUint(b, p.ID)
	return compact.AppendUint(b, p.Seq)
}

// AppendUnpair appends the encoding of u to b.
func AppendUnpair(b []byte, u Unpair) []byte {
	b = append(b, 0)
	return append(b, u.Token[:]...)
}

// DecodePair decodes a pair body. Trailing bytes are ignored, as protomux
// hands the reference's decoder the whole rest of the frame and nothing
// checks that it was consumed. Errors wrap ErrMalformed.
func DecodePair(b []byte) (Pair, error) {
	d := compact.NewDecoder(b)
	var p Pair
	p.IsInitiator = decodeFlags(d)&flagInitiator != 0
	p.Token = Token(d.Fixed32())
	p.ID = d.Uint()
	p.Seq = d.Uint()
	if err := d.Err(); err != nil {
		return Pair{}, fmt.Errorf("%w: pair: %w", ErrMalformed, err)
	}
	return p, nil
}

// DecodeUnpair decodes an unpair body; trailing bytes are ignored. Errors
// wrap ErrMalformed.
func DecodeUnpair(b []byte) (Unpair, error) {
	d := compact.NewDecoder(b)
	decodeFlags(d)
	u := Unpair{Token: Token(d.Fixed32())}
	if err := d.Err(); err != nil {
		return Unpair{}, fmt.Errorf("%w: unpair: %w", ErrMalformed, err)
	}
	return u, nil
}

// decodeFlags reads a bitfield(7) the way compact-encoding-bitfield does:
// a first byte up to 0xfc is the field itself; 0xfd, 0xfe and 0xff announce
// 2, 4 and 8 bytes of which the first is the field. A missing byte sets the
// decoder's sticky error.
func decodeFlags(d *compact.Decoder) byte {
	first := d.Uint8()
	n := 0
	switch first {
	case 0xfd:
		n = 2
	case 0xfe:
		n = 4
	case 0xff:
		n = 8
	}
	if n == 0 {
		return first
	}
	if f := d.Fixed(n); len(f) > 0 {
		return f[0]
	}
	return 0
}

// ValidStreamID reports whether id, as decoded from a Pair, fits a UDX
// stream id (32 bits). The wire allows 64.
func ValidStreamID(id uint64) bool { return id <= 0xffffffff }
