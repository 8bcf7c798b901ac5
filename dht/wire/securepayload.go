package wire

import (
	"io"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/nacl/secretbox"
)

// HolepunchSecret derives the key of a connection attempt's secure payload
// from the Noise handshake hash: keyed BLAKE2b-256 of NSPeerHolepunch with
// the 64-byte hash as key. Both peers hold the hash after the handshake;
// the relaying DHT nodes do not, so they cannot read or forge holepunch
// messages.
func HolepunchSecret(handshakeHash []byte) [32]byte {
	h, err := blake2b.New256(handshakeHash)
	if err != nil { // key longer than 64 bytes: not a handshake hash
		return [32]byte{}
	}
	h.Write(NSPeerHolepunch[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// SecurePayload encrypts and decrypts the payload field of PEER_HOLEPUNCH
// messages, and makes the address tokens holepunching uses to prove that
// a peer really receives packets at an address.
//
// Wire form: nonce[24] ‖ MAC[16] ‖ ciphertext (libsodium secretbox_easy,
// XSalsa20-Poly1305), with a random nonce per message.
type SecurePayload struct {
	shared [32]byte
	local  [32]byte
}

// NewSecurePayload returns a SecurePayload for one connection attempt.
// localSecret must be 32 random bytes of its own (the reference draws
// them per attempt); it keys the tokens and never leaves this side.
func NewSecurePayload(holepunchSecret, localSecret [32]byte) *SecurePayload {
	return &SecurePayload{shared: holepunchSecret, local: localSecret}
}

// Overhead is how many bytes the secure payload adds to the plaintext.
const Overhead = 24 + secretbox.Overhead

// Encrypt encodes p and seals it with a nonce read from rnd.
func (s *SecurePayload) Encrypt(p *HolepunchPayload, rnd io.Reader) ([]byte, error) {
	var nonce [24]byte
	if _, err := io.ReadFull(rnd, nonce[:]); err != nil {
		return nil, err
	}
	return s.Seal(nonce, p.Append(nil)), nil
}

// Seal seals plaintext with the given nonce; Encrypt is the normal entry
// point, Seal exists for deterministic tests.
func (s *SecurePayload) Seal(nonce [24]byte, plaintext []byte) []byte {
	out := make([]byte, 24, Overhead+len(plaintext))
	copy(out, nonce[:])
	return secretbox.Seal(out, plaintext, &nonce, &s.shared)
}

// Decrypt opens b and decodes the holepunch payload inside. Like the
// reference, it refuses anything of 40 bytes or less (an empty plaintext
// included) and any payload that does not decode.
func (s *SecurePayload) Decrypt(b []byte) (HolepunchPayload, error) {
	if len(b) <= Overhead {
		return HolepunchPayload{}, ErrDecrypt
	}
	var nonce [24]byte
	copy(nonce[:], b)
	pt, ok := secretbox.Open(nil, b[24:], &nonce, &s.shared)
	if !ok {
		return HolepunchPayload{}, ErrDecrypt
	}
	return DecodeHolepunchPayload(pt)
}

// Token returns this side's token for a host: keyed BLAKE2b-256 of the
// host string (as the reference formats it, e.g. "1.2.3.4") under the
// local secret. A peer that echoes it back proves it received it there.
func (s *SecurePayload) Token(host string) [32]byte {
	h, _ := blake2b.New256(s.local[:])
	h.Write([]byte(host))
	var out [32]byte
	h.Sum(out[:0])
	return out
}
