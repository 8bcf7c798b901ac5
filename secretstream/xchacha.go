package secretstream

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"

	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/poly1305"
)

// This file implements libsodium's crypto_secretstream_xchacha20poly1305,
// which sodium-secretstream (and so @hyperswarm/secret-stream) uses for the
// data phase. It is built from golang.org/x/crypto primitives.
//
// State: a 32-byte key k and a 12-byte ChaCha20-IETF nonce made of a 4-byte
// little-endian counter followed by an 8-byte "inonce".
//
// One message (push) with tag t and plaintext m produces
//
//	out = B[0] ‖ C ‖ MAC                       (len(m) + 17 bytes)
//
// where block0 = ChaCha20(k, nonce, counter 0) gives the Poly1305 key,
// B = [t, 0×63] XOR keystream block 1, C = m XOR keystream from block 2, and
// MAC = Poly1305(B ‖ C ‖ pad16 ‖ le64(0) ‖ le64(64+len(m))). After each
// message inonce ^= MAC[0:8], counter++, and the state is rekeyed when the
// tag has the REKEY bit or the counter wrapped to 0.
//
// The MAC input differs from the ChaCha20-Poly1305 AEAD of RFC 8439 over
// the plaintext [t, 0×63] ‖ m only in the padding after C: libsodium pads
// with (0x10 − 64 + len(m)) & 0xf = len(m) mod 16 zero bytes where the RFC
// pads to a 16-byte boundary, (16 − len(m) mod 16) mod 16 bytes. The two
// agree when len(m) mod 16 is 0 or 8. The fast path (sealInPlace and
// openInPlace) exploits this because x/crypto only has assembly ChaCha20 in
// its AEAD (the bare chacha20 package is generic Go on amd64, ~3.5x
// slower):
//
//   - len(m) mod 16 ∈ {0, 8}: one AEAD Seal/Open over [t, 0×63] ‖ m, in
//     place, with 64 bytes of headroom in front of m; only byte 0 of the
//     first block is kept.
//   - otherwise: the AEAD Seal is used as the ChaCha20 engine (XOR from
//     block 1; its own MAC is discarded) and the secretstream MAC is
//     computed separately with the assembly Poly1305.
//
// The append-style push/pull run the construction step by step with the
// chacha20 and poly1305 packages; they serve callers with arbitrary buffers
// and cross-check the fast path in tests.

// Constants of crypto_secretstream_xchacha20poly1305.
const (
	KeySize    = 32 // KEYBYTES
	HeaderSize = 24 // HEADERBYTES
	Overhead   = 17 // ABYTES: 1 encrypted tag byte + 16 MAC bytes

	TagMessage byte = 0
	TagPush    byte = 1
	TagRekey   byte = 2
	TagFinal   byte = TagPush | TagRekey
)

// headroom is the scratch space sealInPlace and openInPlace need in front
// of the message: one 64-byte ChaCha20 block.
const headroom = 64

// xstream is one direction of a crypto_secretstream_xchacha20poly1305
// stream. The zero value is unusable; call initPush or initPull. It is a
// plain value so that a caller can snapshot it (to undo a push whose
// ciphertext never left the process).
type xstream struct {
	k     [KeySize]byte
	nonce [chacha20poly1305.NonceSize]byte // counter u32 LE ‖ inonce[8]
	aead  cipher.AEAD                      // ChaCha20-Poly1305 keyed with k; rebuilt on rekey
}

// init sets the state from a key and a header; push and pull differ only in
// where the header comes from.
func (s *xstream) init(key *[KeySize]byte, header *[HeaderSize]byte) {
	sub, err := chacha20.HChaCha20(key[:], header[:16])
	if err != nil {
		panic(err) // unreachable: the lengths are fixed
	}
	copy(s.k[:], sub)
	s.resetCounter()
	copy(s.nonce[4:], header[16:])
	s.rebuild()
}

// resetCounter sets the counter to 1, as libsodium's
// _crypto_secretstream_xchacha20poly1305_counter_reset does (block 0 of each
// nonce is the Poly1305 key, so the message counter never needs to be 0).
func (s *xstream) resetCounter() {
	binary.LittleEndian.PutUint32(s.nonce[:4], 1)
}

func (s *xstream) rebuild() {
	a, err := chacha20poly1305.New(s.k[:])
	if err != nil {
		panic(err) // unreachable: the key is 32 bytes
	}
	s.aead = a
}

// rekey is crypto_secretstream_xchacha20poly1305_rekey: k ‖ inonce is
// replaced by itself XOR the ChaCha20 keystream (block counter 0) under the
// current key and nonce, and the counter restarts at 1.
func (s *xstream) rekey() {
	var x [KeySize + 8]byte
	copy(x[:KeySize], s.k[:])
	copy(x[KeySize:], s.nonce[4:])
	c, err := chacha20.NewUnauthenticatedCipher(s.k[:], s.nonce[:])
	if err != nil {
		panic(err)
	}
	c.XORKeyStream(x[:], x[:])
	copy(s.k[:], x[:KeySize])
	copy(s.nonce[4:], x[KeySize:])
	s.resetCounter()
	s.rebuild()
}

// advance is the state update after a message, shared by push and pull.
func (s *xstream) advance(mac []byte, tag byte) {
	for i := 0; i < 8; i++ {
		s.nonce[4+i] ^= mac[i]
	}
	c := binary.LittleEndian.Uint32(s.nonce[:4]) + 1
	binary.LittleEndian.PutUint32(s.nonce[:4], c)
	if tag&TagRekey != 0 || c == 0 {
		s.rekey()
	}
}

// aligned reports whether a message length gets the same Poly1305 padding
// from libsodium's secretstream and from the RFC 8439 AEAD.
func aligned(mlen int) bool { return mlen%16 == 0 || mlen%16 == 8 }

// sealInPlace encrypts the message buf[headroom:] in place. buf must have
// capacity for len(buf)+16 bytes; buf[:headroom] is overwritten. It returns
// the ciphertext B[0] ‖ C ‖ MAC, which is buf[headroom-1 : len(buf)+16].
func (s *xstream) sealInPlace(buf []byte, tag byte) []byte {
	mlen := len(buf) - headroom
	buf[0] = tag
	clear(buf[1:headroom])
	sealed := s.aead.Seal(buf[:0], s.nonce[:], buf, nil) // B ‖ C ‖ AEAD MAC
	mac := sealed[headroom+mlen:]
	if !aligned(mlen) {
		var m [16]byte
		s.macOf(&m, nil, sealed[:headroom+mlen])
		copy(mac, m[:])
	}
	sealed[headroom-1] = sealed[0] // B[0] goes right before C
	s.advance(mac, tag)
	return sealed[headroom-1:]
}

// openInPlace authenticates and decrypts the ciphertext buf[headroom-1:]
// (B[0] ‖ C ‖ MAC) in place. buf[:headroom-1] is scratch and is
// overwritten. It returns the plaintext, which is buf[headroom:len(buf)-16],
// and the tag. On failure the state is unchanged and the buffer contents are
// unspecified.
func (s *xstream) openInPlace(buf []byte) ([]byte, byte, error) {
	if len(buf) < headroom-1+Overhead {
		return nil, 0, ErrShortMessage
	}
	mlen := len(buf) - (headroom - 1) - Overhead
	data := buf[:headroom+mlen] // will hold B ‖ C
	var mac [16]byte
	copy(mac[:], buf[headroom+mlen:])
	// Rebuild B: the received B[0], then raw keystream bytes 1..63 of
	// block 1, which the receiver has to compute itself.
	var ks [128]byte // keystream blocks 0 and 1
	if aligned(mlen) {
		s.streamAt(1, ks[64:], ks[64:])
	} else {
		s.streamAt(0, ks[:], ks[:])
	}
	data[0] = buf[headroom-1]
	copy(data[1:headroom], ks[65:])
	var pt []byte
	if aligned(mlen) {
		var err error
		if pt, err = s.aead.Open(buf[:0], s.nonce[:], buf, nil); err != nil {
			return nil, 0, ErrDecrypt
		}
	} else {
		var want [16]byte
		s.macOfKey(&want, (*[32]byte)(ks[:32]), data)
		if subtle.ConstantTimeCompare(want[:], mac[:]) != 1 {
			return nil, 0, ErrDecrypt
		}
		// XOR with the keystream from block 1; the AEAD MAC this
		// writes over the received one is discarded.
		pt = s.aead.Seal(data[:0], s.nonce[:], data, nil)[:headroom+mlen]
	}
	tag := pt[0]
	s.advance(mac[:], tag)
	return pt[headroom:], tag, nil
}

// streamAt XORs src with the ChaCha20-IETF keystream under the current key
// and nonce, starting at the given block counter, into dst.
func (s *xstream) streamAt(counter uint32, dst, src []byte) {
	c, err := chacha20.NewUnauthenticatedCipher(s.k[:], s.nonce[:])
	if err != nil {
		panic(err)
	}
	c.SetCounter(counter)
	c.XORKeyStream(dst, src)
}

// macOf computes the secretstream MAC (no additional data) over
// B ‖ C: b is block B when given separately, else ct holds B ‖ C.
func (s *xstream) macOf(out *[16]byte, b, ct []byte) {
	var polyKey [32]byte
	s.streamAt(0, polyKey[:], polyKey[:])
	s.macOfKey(out, &polyKey, b, ct)
}

// macOfKey is macOf with the Poly1305 key (keystream block 0) given. The
// MAC input is B ‖ C ‖ zeros((0x10 − 64 + len(m)) & 0xf) ‖ le64(0) ‖
// le64(64 + len(m)) — note libsodium's padding, which is len(m) mod 16
// bytes, not the RFC 8439 padding to a 16-byte boundary.
func (s *xstream) macOfKey(out *[16]byte, polyKey *[32]byte, parts ...[]byte) {
	h := poly1305.New(polyKey)
	n := 0
	for _, p := range parts {
		h.Write(p)
		n += len(p)
	}
	mlen := n - 64
	var pad [16]byte
	h.Write(pad[:mlen&0xf])
	var lens [16]byte // le64(len(ad)) = 0 ‖ le64(64 + len(m))
	binary.LittleEndian.PutUint64(lens[8:], uint64(n))
	h.Write(lens[:])
	h.Sum(out[:0])
}

// push is crypto_secretstream_xchacha20poly1305_push with no additional
// data: it appends the len(m)+17 byte ciphertext of m to dst and returns the
// extended slice. To encrypt in place, m must start at dst[len(dst)+1].
func (s *xstream) push(dst, m []byte, tag byte) []byte {
	ret, out := sliceForAppend(dst, len(m)+Overhead)
	var b [64]byte
	b[0] = tag
	s.streamAt(1, b[:], b[:])
	ct := out[1 : 1+len(m)]
	s.streamAt(2, ct, m)
	var mac [16]byte
	s.macOf(&mac, b[:], ct)
	out[0] = b[0]
	copy(out[1+len(m):], mac[:])
	s.advance(mac[:], tag)
	return ret
}

// pull is crypto_secretstream_xchacha20poly1305_pull with no additional
// data: it authenticates in, appends its plaintext (len(in)-17 bytes) to dst
// and returns it with the tag. To decrypt in place use in[1:1] as dst. On
// failure the state is unchanged and nothing is written.
func (s *xstream) pull(dst, in []byte) ([]byte, byte, error) {
	if len(in) < Overhead {
		return dst, 0, ErrShortMessage
	}
	mlen := len(in) - Overhead
	ct := in[1 : 1+mlen]
	var b [64]byte
	s.streamAt(1, b[:], b[:])
	tag := b[0] ^ in[0]
	b[0] = in[0] // the MAC covers the encrypted tag byte
	var mac [16]byte
	s.macOf(&mac, b[:], ct)
	if subtle.ConstantTimeCompare(mac[:], in[1+mlen:]) != 1 {
		return dst, 0, ErrDecrypt
	}
	ret, out := sliceForAppend(dst, mlen)
	s.streamAt(2, out, ct)
	s.advance(mac[:], tag)
	return ret, tag, nil
}

func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}
