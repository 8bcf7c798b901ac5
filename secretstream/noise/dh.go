package noise

import (
	"crypto/ed25519"
	"crypto/sha512"
	"fmt"
	"io"

	"filippo.io/edwards25519"
	"github.com/flynn/noise"
)

// DHLen is the length of a public key and of a DH output: a compressed
// Edwards point.
const DHLen = 32

// ed25519DH is noise-curve-ed as a flynn/noise DH function.
//
// Key layout: a noise.DHKey's Private is the 64-byte libsodium/Go Ed25519
// private key, seed(32) ‖ public(32), and Public the 32-byte Ed25519 public
// key. The DH scalar is derived from the seed exactly as Ed25519 signing
// derives it: s = clamp(SHA-512(seed)[0:32]); the public half of Private is
// not used. This keeps the key in the one form the rest of keytunnel (and
// libsodium, and Node's keyPair.secretKey) already holds, instead of
// inventing a scalar-only form. noise-curve-ed also accepts "tweaked" key
// pairs that carry a bare scalar; hyperdht never hands those to a
// handshake, so they have no counterpart here.
type ed25519DH struct{}

func (ed25519DH) DHName() string { return "Ed25519" }
func (ed25519DH) DHLen() int     { return DHLen }

// GenerateKeypair reads a 32-byte seed from random, so a test that feeds a
// fixed reader gets a fixed ephemeral key, like noise-handshake's
// generateKeyPair(seed).
func (ed25519DH) GenerateKeypair(random io.Reader) (noise.DHKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(random, seed); err != nil {
		return noise.DHKey{}, fmt.Errorf("noise: reading ephemeral seed: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return noise.DHKey{Private: priv, Public: append([]byte(nil), priv[32:]...)}, nil
}

func (ed25519DH) DH(privkey, pubkey []byte) ([]byte, error) {
	return DH(privkey, pubkey)
}

// DH computes compress([s]·P), where s is the clamped scalar of the Ed25519
// private key priv (seed ‖ public) and P the point pub encodes. This is
// noise-curve-ed's dh, which calls libsodium's
// crypto_scalarmult_ed25519_noclamp; the checks below are the ones that
// libsodium makes and filippo.io/edwards25519 does not.
func DH(priv, pub []byte) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadKey, len(priv))
	}
	p, err := checkPoint(pub)
	if err != nil {
		return nil, err
	}
	h := sha512.Sum512(priv[:32])
	s, err := new(edwards25519.Scalar).SetBytesWithClamping(h[:32])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return scalarMult(s, p)
}

// scalarMult is the multiplication behind DH, split out so that the
// identity check, which no clamped scalar can reach on a prime-order point,
// can still be tested.
func scalarMult(s *edwards25519.Scalar, p *edwards25519.Point) ([]byte, error) {
	// SetBytesWithClamping reduced the clamped value mod L; on a point of
	// the prime-order subgroup (checked by the caller) [s mod L]P = [s]P, so
	// this equals libsodium's unreduced noclamp multiplication. libsodium
	// also refuses an all-zero scalar; that only matters for the zero
	// scalar, whose product is the identity refused here.
	q := new(edwards25519.Point).ScalarMult(s, p)
	if q.Equal(edwards25519.NewIdentityPoint()) == 1 {
		return nil, ErrIdentity
	}
	return q.Bytes(), nil
}

// checkPoint decodes pub and refuses what libsodium refuses: a
// non-canonical encoding (y >= p; SetBytes accepts it and reduces), a
// point of small order, and a point with a torsion component.
func checkPoint(pub []byte) (*edwards25519.Point, error) {
	if len(pub) != DHLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadPoint, len(pub))
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: not on the curve", ErrBadPoint)
	}
	if !canonical(pub) {
		return nil, fmt.Errorf("%w: non-canonical encoding", ErrBadPoint)
	}
	id := edwards25519.NewIdentityPoint()
	if new(edwards25519.Point).MultByCofactor(p).Equal(id) == 1 {
		return nil, fmt.Errorf("%w: small order", ErrBadPoint)
	}
	// [L]P = identity iff P is in the prime-order subgroup. [L]P is computed
	// as [L-1]P + P because L itself reduces to 0 as a Scalar. P is public,
	// so the variable-time multiplication (about twice as fast) is safe.
	lp := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(scalarLMinus1, p, edwards25519.NewScalar())
	lp.Add(lp, p)
	if lp.Equal(id) != 1 {
		return nil, fmt.Errorf("%w: not in the prime-order subgroup", ErrBadPoint)
	}
	return p, nil
}

// scalarLMinus1 is L-1 = -1 mod L, the largest scalar.
var scalarLMinus1 = func() *edwards25519.Scalar {
	var b [32]byte
	b[0] = 1
	one, _ := edwards25519.NewScalar().SetCanonicalBytes(b[:])
	return edwards25519.NewScalar().Negate(one)
}()

// canonical reports whether the y coordinate in pub (sign bit masked) is
// below p = 2^255 - 19, as libsodium's ge25519_is_canonical checks.
func canonical(pub []byte) bool {
	// y >= p only if the top 250 bits are all ones and the low byte >= 0xed.
	if pub[31]&0x7f != 0x7f {
		return true
	}
	for i := 30; i > 0; i-- {
		if pub[i] != 0xff {
			return true
		}
	}
	return pub[0] < 0xed
}
