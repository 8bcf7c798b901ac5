package noise

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"filippo.io/edwards25519"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

type dhCase struct {
	name string
	pub  []byte
	good bool // whether DH must succeed
}

func dhCases(t testing.TB) []dhCase {
	var cases []dhCase
	for i := byte(2); i < 8; i++ {
		pk := seeded(i).Public
		cases = append(cases, dhCase{fmt.Sprintf("key %d", i), pk[:], true})
	}
	for i, p := range torsion(t) {
		cases = append(cases, dhCase{fmt.Sprintf("torsion %d", i), p, false})
	}
	for i, p := range badEncodings(t) {
		cases = append(cases, dhCase{fmt.Sprintf("signed x=0 %d", i), p, false})
	}
	for _, p := range nonCanonical() {
		cases = append(cases, dhCase{fmt.Sprintf("non-canonical %x", p[0]^p[31]), p, false})
	}
	for k := 1; k < 8; k++ {
		cases = append(cases, dhCase{fmt.Sprintf("key + %d·T8", k), mixedOrder(t, k), false})
	}
	cases = append(cases, dhCase{"not on curve", unhex(t, "0200000000000000000000000000000000000000000000000000000000000000"), false})
	return cases
}

// TestDHAgainstNode computes DH in Go and in noise-curve-ed (libsodium)
// for several private keys against good keys, all eight torsion points,
// every non-canonical encoding, points outside the prime-order subgroup
// and a point off the curve. Both must give the same bytes, or both refuse.
func TestDHAgainstNode(t *testing.T) {
	p := nodetest.Start(t, "noise-vectors.js", "dh")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	privs := []key.KeyPair{seeded(1), seeded(0xfe)}
	for range 3 {
		kp, err := key.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		privs = append(privs, kp)
	}
	cases := dhCases(t)
	n := 0
	for _, priv := range privs {
		seed := priv.Seed()
		for _, c := range cases {
			fmt.Fprintf(p.Stdin(), "%x %x\n", seed[:], c.pub)
			line, err := p.Line(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, gerr := DH(priv.Private, c.pub)
			if (gerr == nil) != c.good {
				t.Errorf("%s: Go DH error %v, want success=%v", c.name, gerr, c.good)
			}
			switch {
			case strings.HasPrefix(line, "dherr"):
				if gerr == nil {
					t.Errorf("%s: Node refuses (%s), Go accepts", c.name, line)
				}
			case gerr != nil:
				t.Errorf("%s: Go refuses (%v), Node gives %s", c.name, gerr, line)
			case line != "dh "+hex.EncodeToString(got):
				t.Errorf("%s: Go %x, Node %s", c.name, got, line)
			default:
				n++
			}
		}
	}
	if n != len(privs)*6 {
		t.Errorf("%d good DH results, want %d", n, len(privs)*6)
	}
}

// TestDHSymmetric: DH(a, B) = DH(b, A), the property the handshake relies
// on, for random keys.
func TestDHSymmetric(t *testing.T) {
	for range 20 {
		a, _ := key.Generate(nil)
		b, _ := key.Generate(nil)
		ab, err := DH(a.Private, b.Public[:])
		if err != nil {
			t.Fatal(err)
		}
		ba, err := DH(b.Private, a.Public[:])
		if err != nil {
			t.Fatal(err)
		}
		if string(ab) != string(ba) {
			t.Fatalf("DH not symmetric: %x %x", ab, ba)
		}
	}
}

// TestDHRefusals checks each refusal's sentinel and that nothing panics.
func TestDHRefusals(t *testing.T) {
	kp := seeded(1)
	for _, c := range dhCases(t) {
		_, err := DH(kp.Private, c.pub)
		if c.good != (err == nil) {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.good && !errors.Is(err, ErrBadPoint) {
			t.Errorf("%s: error %v is not ErrBadPoint", c.name, err)
		}
	}
	pk := seeded(2).Public
	for _, n := range []int{0, 31, 32, 63, 65} {
		if _, err := DH(make([]byte, n), pk[:]); !errors.Is(err, ErrBadKey) {
			t.Errorf("private key of %d bytes: %v", n, err)
		}
	}
	for _, n := range []int{0, 31, 33, 64} {
		if _, err := DH(kp.Private, make([]byte, n)); !errors.Is(err, ErrBadPoint) {
			t.Errorf("public key of %d bytes: %v", n, err)
		}
	}
}

// TestDHIdentity: no clamped scalar reaches the identity on a prime-order
// point, so the check is exercised with the zero scalar, which libsodium
// refuses too.
func TestDHIdentity(t *testing.T) {
	if _, err := scalarMult(edwards25519.NewScalar(), edwards25519.NewGeneratorPoint()); !errors.Is(err, ErrIdentity) {
		t.Fatalf("zero scalar: %v", err)
	}
	// And the clamped scalar is the Ed25519 one: [s]B is the public key.
	kp := seeded(5)
	h := sha512.Sum512(kp.Private[:32])
	s, _ := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	got, err := scalarMult(s, edwards25519.NewGeneratorPoint())
	if err != nil || string(got) != string(kp.Public[:]) {
		t.Fatalf("[s]B = %x (%v), public key %s", got, err, kp.Public)
	}
}

// TestEphemeralFromRandom: a fresh ephemeral is drawn from Config.Random
// as a 32-byte seed, and a failing reader fails the write cleanly.
func TestEphemeralFromRandom(t *testing.T) {
	h, _ := New(Config{Pattern: XX, Initiator: true, KeyPair: seeded(1), Random: strings.NewReader(strings.Repeat("\x03", 32))})
	m, err := h.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := seeded(3).Public; string(m[:32]) != string(want[:]) {
		t.Fatalf("ephemeral %x, want %s", m[:32], want)
	}
	h, _ = New(Config{Pattern: XX, Initiator: true, KeyPair: seeded(1), Random: strings.NewReader("short")})
	if _, err := h.WriteMessage(nil, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short random: %v", err)
	}
}
