package noise

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"filippo.io/edwards25519"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seeded is the key pair of seed b×32, as the Node script's seedKP(b).
func seeded(b byte) key.KeyPair {
	var s key.Seed
	for i := range s {
		s[i] = b
	}
	return key.FromSeed(s)
}

// nodeOutput runs a Node script that prints "name hex" lines and exits, and
// returns the lines as a map.
func nodeOutput(t *testing.T, args ...string) map[string]string {
	t.Helper()
	p := nodetest.Start(t, "noise-vectors.js", args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]string{}
	for {
		l, err := p.Line(ctx)
		if err != nil {
			break
		}
		k, v, _ := strings.Cut(l, " ")
		out[k] = v
	}
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("noise-vectors.js %v: %v\n%s", args, err, p.Stderr())
	}
	return out
}

// compare checks every key of want against got; a key missing from got
// is a failure, so the Node script and the test cannot drift apart silently.
func compare(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: the Go side has no value", k)
		case g != w:
			t.Errorf("%s\n  go %s\nnode %s", k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: Node printed no value", k)
		}
	}
}

// torsion returns the eight points of order dividing 8, canonically encoded.
func torsion(t testing.TB) [][]byte {
	t.Helper()
	// A point of order 8 (libsodium's small-order blocklist, entry 2).
	t8, err := new(edwards25519.Point).SetBytes(unhex(t, "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	p := edwards25519.NewIdentityPoint()
	for range 8 {
		out = append(out, p.Bytes())
		p = new(edwards25519.Point).Add(p, t8)
	}
	return out
}

// badEncodings returns encodings of small-order points that are not the
// canonical ones: the sign bit set on the two points with x = 0 (y = 1, the
// identity, and y = -1, order 2), which both libraries decode.
func badEncodings(t testing.TB) [][]byte {
	id := unhex(t, "0100000000000000000000000000000000000000000000000000000000000080")
	o2 := unhex(t, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff")
	return [][]byte{id, o2}
}

// nonCanonical returns every encoding whose y, sign bit masked, is in
// [p, 2^255), with both sign bits: y+p for y < 19. Some decode to a point
// (SetBytes reduces them), some are not on the curve.
func nonCanonical() [][]byte {
	var out [][]byte
	for y := byte(0); y < 19; y++ {
		for _, sign := range []byte{0, 0x80} {
			b := make([]byte, 32)
			for i := range b {
				b[i] = 0xff
			}
			b[0] = 0xed + y
			b[31] = 0x7f | sign
			out = append(out, b)
		}
	}
	return out
}

// mixedOrder returns a valid public key plus the torsion point k·T8 (k in
// 1..7): on the curve, not of small order, but outside the prime-order
// subgroup.
func mixedOrder(t testing.TB, k int) []byte {
	pk := seeded(9).Public
	p, err := new(edwards25519.Point).SetBytes(pk[:])
	if err != nil {
		t.Fatal(err)
	}
	tt, _ := new(edwards25519.Point).SetBytes(torsion(t)[k])
	return new(edwards25519.Point).Add(p, tt).Bytes()
}
