package noise

import (
	"bytes"
	"crypto/sha512"
	"errors"
	"testing"

	"filippo.io/edwards25519"
)

// readerAt returns a handshake with fixed keys that is about to read
// message `at` (0-based) of pattern pat, and the real message it would
// read there (with payload "payload").
func readerAt(t testing.TB, pat Pattern, at int) (*Handshake, []byte) {
	t.Helper()
	ie, re := seeded(3), seeded(4)
	var prologue []byte
	icfg := Config{Pattern: pat, Initiator: true, KeyPair: seeded(1), Ephemeral: &ie}
	if pat == IK {
		prologue = NSPeerHandshake[:]
		icfg.RemoteKey = seeded(2).Public
	}
	icfg.Prologue = prologue
	ini, err := New(icfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := New(Config{Pattern: pat, KeyPair: seeded(2), Prologue: prologue, Ephemeral: &re})
	if err != nil {
		t.Fatal(err)
	}
	sides := []*Handshake{ini, res}
	for i := 0; ; i++ {
		w, r := sides[i%2], sides[(i+1)%2]
		m, err := w.WriteMessage(nil, []byte("payload"))
		if err != nil {
			t.Fatal(err)
		}
		if i == at {
			return r, m
		}
		if _, err := r.ReadMessage(nil, m); err != nil {
			t.Fatal(err)
		}
	}
}

// stages are the five places a handshake reads a message.
var stages = []struct {
	pat Pattern
	at  int
}{{IK, 0}, {IK, 1}, {XX, 0}, {XX, 1}, {XX, 2}}

// FuzzReadMessage feeds arbitrary bytes to each reading position of IK and
// XX (chosen by stage). Nothing may panic; every refusal must carry
// ErrMessage; and where the message is authenticated (every one but XX
// message 1), only the real message may be accepted, since nobody without
// the keys can produce another. Seeds are the real messages the encoder
// made, and cuts of them.
func FuzzReadMessage(f *testing.F) {
	for i, s := range stages {
		_, m := readerAt(f, s.pat, s.at)
		f.Add(uint8(i), m)
		f.Add(uint8(i), m[:len(m)-1])
		f.Add(uint8(i), m[:32])
		f.Add(uint8(i), append(append([]byte(nil), m...), 0))
	}
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, stage uint8, msg []byte) {
		s := stages[int(stage)%len(stages)]
		h, real := readerAt(t, s.pat, s.at)
		pl, err := h.ReadMessage(nil, msg)
		if err != nil {
			if !errors.Is(err, ErrMessage) {
				t.Fatalf("refusal without ErrMessage: %v", err)
			}
			if _, err2 := h.ReadMessage(nil, real); err2 == nil {
				t.Fatal("a failed handshake read another message")
			}
			return
		}
		authenticated := !(s.pat == XX && s.at == 0)
		if authenticated && !bytes.Equal(msg, real) {
			t.Fatalf("accepted a forged message %x", msg)
		}
		if !authenticated && !bytes.Equal(pl, msg[32:]) {
			t.Fatalf("clear payload %x, message %x", pl, msg)
		}
	})
}

// FuzzDH feeds arbitrary 32-byte strings to DH as public keys. Nothing may
// panic; a refusal is ErrBadPoint (ErrIdentity cannot happen on a
// prime-order point); an accepted key must be a canonical encoding of a
// point of the prime-order subgroup, and the result must match a second,
// differently computed product ([s]P by variable-time double-scalar
// multiplication).
func FuzzDH(f *testing.F) {
	for _, c := range dhCases(f) {
		f.Add(c.pub)
	}
	priv := seeded(1).Private
	f.Fuzz(func(t *testing.T, pub []byte) {
		got, err := DH(priv, pub)
		if err != nil {
			if !errors.Is(err, ErrBadPoint) {
				t.Fatalf("refusal %v", err)
			}
			return
		}
		p, err := new(edwards25519.Point).SetBytes(pub)
		if err != nil || !bytes.Equal(p.Bytes(), pub) {
			t.Fatalf("accepted a non-canonical or off-curve key %x", pub)
		}
		if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
			t.Fatalf("accepted a small-order key %x", pub)
		}
		s := clampedScalar(priv)
		want := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(s, p, edwards25519.NewScalar())
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("DH %x, [s]P %x", got, want.Bytes())
		}
	})
}

// FuzzHandshake runs whole Go-to-Go handshakes with arbitrary payloads:
// every payload arrives intact and both sides agree on the keys.
func FuzzHandshake(f *testing.F) {
	f.Add(false, []byte("a"), []byte("b"), []byte("c"))
	f.Add(true, []byte{}, []byte{}, []byte{})
	f.Add(true, make([]byte, 1000), []byte{0}, []byte(nil))
	f.Fuzz(func(t *testing.T, xx bool, p1, p2, p3 []byte) {
		pat := IK
		if xx {
			pat = XX
		}
		ini, res := pair(t, pat)
		sides := []*Handshake{ini, res}
		for i, pl := range [][]byte{p1, p2, p3}[:len(layouts[pat])] {
			m, err := sides[i%2].WriteMessage(nil, pl)
			if err != nil {
				t.Fatal(err)
			}
			got, err := sides[(i+1)%2].ReadMessage([]byte("x"), m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append([]byte("x"), pl...)) {
				t.Fatalf("payload %d: %x, sent %x", i+1, got, pl)
			}
		}
		ri, err1 := ini.Result()
		rr, err2 := res.Result()
		if err1 != nil || err2 != nil || ri.Tx != rr.Rx || ri.Rx != rr.Tx || ri.Hash != rr.Hash || ri.Tx == ri.Rx {
			t.Fatalf("results disagree: %v %v", err1, err2)
		}
	})
}

// clampedScalar derives the Ed25519 secret scalar of priv on its own, for
// cross-checking DH.
func clampedScalar(priv []byte) *edwards25519.Scalar {
	h := sha512.Sum512(priv[:32])
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		panic(err)
	}
	return s
}
