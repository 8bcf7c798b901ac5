package key

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// Size is the length of a public key and of a seed, in bytes.
const Size = 32

// PublicKey is an Ed25519 public key: the compressed Edwards point as
// libsodium stores it. On the HyperDHT network it is a peer's identity, the
// static key of its Noise handshakes and the key that signs its records.
type PublicKey [Size]byte

// Seed is the 32 secret bytes from which a key pair is derived.
type Seed [Size]byte

// KeyPair is an Ed25519 key pair.
//
// Private is in Go's layout, seed(32) ‖ public(32), which is byte for byte
// libsodium's 64-byte secret key, so it can be handed to Node as is.
type KeyPair struct {
	Public  PublicKey
	Private ed25519.PrivateKey
}

// FromSeed derives a key pair from a seed. It equals libsodium's
// crypto_sign_seed_keypair: the public key is [SHA-512(seed)[:32], clamped]·B.
func FromSeed(seed Seed) KeyPair {
	priv := ed25519.NewKeyFromSeed(seed[:])
	var kp KeyPair
	kp.Private = priv
	copy(kp.Public[:], priv[32:])
	return kp
}

// SeedFromBytes checks that b is 32 bytes long and returns it as a Seed.
func SeedFromBytes(b []byte) (Seed, error) {
	var s Seed
	if len(b) != Size {
		return s, fmt.Errorf("%w (got %d)", ErrSeedLength, len(b))
	}
	copy(s[:], b)
	return s, nil
}

// Generate returns a fresh key pair from rnd, or from crypto/rand when rnd is
// nil.
func Generate(rnd io.Reader) (KeyPair, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var s Seed
	if _, err := io.ReadFull(rnd, s[:]); err != nil {
		return KeyPair{}, fmt.Errorf("key: reading randomness: %w", err)
	}
	return FromSeed(s), nil
}

// Seed returns the seed the pair was derived from.
func (kp KeyPair) Seed() Seed {
	var s Seed
	copy(s[:], kp.Private.Seed())
	return s
}

// String returns the public key in lowercase hex, the form keytunnel prints.
func (k PublicKey) String() string { return hex.EncodeToString(k[:]) }

// Z32 returns the public key in z-base-32, as hypercore-id-encoding.encode.
func (k PublicKey) Z32() string { return encodeZ32(k[:]) }

// IsZero reports whether k is all zeros (an unset key).
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// MarshalText implements encoding.TextMarshaler with the hex form.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts every form
// ParsePublicKey does.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParsePublicKey reads a public key written as 64 hex characters or 52
// z-base-32 characters, either in either case. Like hypercore-id-encoding it also
// accepts a "pear://" prefix. Surrounding white space is ignored, since keys
// are often pasted.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	t := strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(t, "pear://"); ok {
		t, _, _ = strings.Cut(rest, "/")
	}
	switch len(t) {
	case 2 * Size:
		if _, err := hex.Decode(k[:], []byte(t)); err != nil {
			return k, fmt.Errorf("%w: %q: bad hex", ErrKeyFormat, s)
		}
		return k, nil
	case z32Len:
		// z-base-32 is lowercase, but a key read aloud or retyped may
		// not be; hex is accepted in either case too.
		if !decodeZ32(k[:], strings.ToLower(t)) {
			return k, fmt.Errorf("%w: %q: bad z-base-32", ErrKeyFormat, s)
		}
		return k, nil
	}
	return k, fmt.Errorf("%w: %q has %d characters", ErrKeyFormat, s, len(t))
}

// ParseSeed reads a seed written as 64 hex characters.
func ParseSeed(s string) (Seed, error) {
	var seed Seed
	t := strings.TrimSpace(s)
	if len(t) != 2*Size {
		return seed, fmt.Errorf("%w: want 64 hex characters, got %d", ErrSeedLength, len(t))
	}
	if _, err := hex.Decode(seed[:], []byte(t)); err != nil {
		return seed, fmt.Errorf("key: seed is not hex: %w", err)
	}
	return seed, nil
}
