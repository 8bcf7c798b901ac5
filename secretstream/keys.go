package secretstream

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/nacl/secretbox"
)

// The secret-stream namespaces: hypercore-crypto.namespace(
// "hyperswarm/secret-stream", 3), i.e. NS_i = BLAKE2b-256(
// BLAKE2b-256("hyperswarm/secret-stream") ‖ byte(i)). Tests re-derive them.
var (
	nsInitiator = [32]byte{0xa9, 0x31, 0xa0, 0x15, 0x5b, 0x5c, 0x09, 0xe6, 0xd2, 0x86, 0x28, 0x23, 0x6a, 0xf8, 0x3c, 0x4b, 0x8a, 0x6a, 0xf9, 0xaf, 0x60, 0x98, 0x6e, 0xde, 0xed, 0xe9, 0xdc, 0x5d, 0x63, 0x19, 0x2b, 0xf7}
	nsResponder = [32]byte{0x74, 0x2c, 0x9d, 0x83, 0x3d, 0x43, 0x0a, 0xf4, 0xc4, 0x8a, 0x87, 0x05, 0xe9, 0x16, 0x31, 0xee, 0xcf, 0x29, 0x54, 0x42, 0xbb, 0xca, 0x18, 0x99, 0x6e, 0x59, 0x70, 0x97, 0x72, 0x3b, 0x10, 0x61}
	nsSend      = [32]byte{0xaa, 0xb9, 0x7d, 0x09, 0x74, 0x71, 0xf5, 0x66, 0x51, 0xb0, 0x46, 0x0f, 0xfc, 0x8a, 0xaa, 0x7d, 0x33, 0x42, 0xf7, 0x37, 0x75, 0x97, 0xd6, 0x0b, 0x92, 0x5a, 0x1d, 0xac, 0x68, 0x9a, 0xdc, 0xbf}
)

// HashSize is the length of a Noise handshake hash (BLAKE2b-512).
const HashSize = 64

// keyedHash is libsodium's crypto_generichash(out32, parts..., key): keyed
// BLAKE2b with a 32-byte output.
func keyedHash(key []byte, parts ...[]byte) (out [32]byte) {
	h, err := blake2b.New256(key)
	if err != nil {
		panic(err) // unreachable: keys here are 64 bytes
	}
	for _, p := range parts {
		h.Write(p)
	}
	h.Sum(out[:0])
	return out
}

// StreamID is the 32-byte id a peer puts in front of its secretstream
// header: BLAKE2b-256 keyed with the handshake hash over NS_INITIATOR or
// NS_RESPONDER, for the sender's own role. Node: NoiseSecretStream.id.
func StreamID(hash *[HashSize]byte, isInitiator bool) [32]byte {
	if isInitiator {
		return keyedHash(hash[:], nsInitiator[:])
	}
	return keyedHash(hash[:], nsResponder[:])
}

// DatagramKey is the secretbox key that the peer of the given role encrypts
// its datagrams (send/trySend) with: BLAKE2b-256 keyed with the handshake
// hash over NS_role ‖ NS_SEND. A peer decrypts with the other role's key.
func DatagramKey(hash *[HashSize]byte, isInitiator bool) [32]byte {
	if isInitiator {
		return keyedHash(hash[:], nsInitiator[:], nsSend[:])
	}
	return keyedHash(hash[:], nsResponder[:], nsSend[:])
}

// Datagram envelope sizes.
const (
	DatagramCounterSize = 8
	// DatagramOverhead is what an envelope adds to its plaintext: the
	// counter and the Poly1305 tag.
	DatagramOverhead = DatagramCounterSize + secretbox.Overhead
	// minEnvelope is secret-stream's lower bound (the secretbox nonce size):
	// shorter MESSAGE payloads are ignored without trying to open them.
	minEnvelope = 24
)

// SealDatagram appends the envelope of plaintext to dst:
//
//	counter[8] ‖ MAC[16] ‖ XSalsa20(plaintext)
//
// that is, the counter followed by libsodium's crypto_secretbox_easy under
// key with the 24-byte nonce counter ‖ 16 zero bytes. It is secret-stream's
// _boxMessage with the counter supplied by the caller.
func SealDatagram(dst []byte, key *[32]byte, counter [DatagramCounterSize]byte, plaintext []byte) []byte {
	var nonce [24]byte
	copy(nonce[:], counter[:])
	dst = append(dst, counter[:]...)
	return secretbox.Seal(dst, plaintext, &nonce, key)
}

// OpenDatagram authenticates an envelope made by SealDatagram and appends
// its plaintext to dst. ok is false for envelopes shorter than 24 bytes
// (which secret-stream ignores, such as hyperdht's empty path-confirmation
// MESSAGE) and for envelopes that fail authentication; out is then dst
// as given (secretbox.Open would return nil, losing a caller's buffer).
// There is no replay protection, as in Node.
func OpenDatagram(dst []byte, key *[32]byte, envelope []byte) (out []byte, ok bool) {
	if len(envelope) < minEnvelope {
		return dst, false
	}
	var nonce [24]byte
	copy(nonce[:], envelope[:DatagramCounterSize])
	if out, ok = secretbox.Open(dst, envelope[DatagramCounterSize:], &nonce, key); !ok {
		return dst, false
	}
	return out, true
}

// Datagrams holds the per-connection state of secret-stream's unordered
// messages: the two keys and the send counter. Safe for concurrent use.
type Datagrams struct {
	sendKey, recvKey [32]byte

	mu       sync.Mutex
	counter  [DatagramCounterSize]byte
	initial  [DatagramCounterSize]byte
	finished bool
}

// NewDatagrams derives the datagram keys for one side of a connection and
// starts the send counter at a random value read from rnd (crypto/rand when
// nil), as Node does.
func NewDatagrams(hash *[HashSize]byte, isInitiator bool, rnd io.Reader) (*Datagrams, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	d := &Datagrams{
		sendKey: DatagramKey(hash, isInitiator),
		recvKey: DatagramKey(hash, !isInitiator),
	}
	if _, err := io.ReadFull(rnd, d.initial[:]); err != nil {
		return nil, fmt.Errorf("secretstream: reading randomness: %w", err)
	}
	d.counter = d.initial
	return d, nil
}

// Seal appends the envelope of plaintext to dst. The counter is incremented
// (sodium_increment: little-endian) before use; when it comes back to its
// initial value Seal fails with ErrNonceExhausted from then on.
func (d *Datagrams) Seal(dst, plaintext []byte) ([]byte, error) {
	d.mu.Lock()
	if d.finished {
		d.mu.Unlock()
		return dst, ErrNonceExhausted
	}
	for i := range d.counter {
		d.counter[i]++
		if d.counter[i] != 0 {
			break
		}
	}
	if subtle.ConstantTimeCompare(d.counter[:], d.initial[:]) == 1 {
		d.finished = true
		d.mu.Unlock()
		return dst, ErrNonceExhausted
	}
	c := d.counter
	d.mu.Unlock()
	return SealDatagram(dst, &d.sendKey, c, plaintext), nil
}

// Open authenticates an envelope from the peer and appends its plaintext to
// dst; ok is false when the envelope must be ignored.
func (d *Datagrams) Open(dst, envelope []byte) ([]byte, bool) {
	return OpenDatagram(dst, &d.recvKey, envelope)
}
