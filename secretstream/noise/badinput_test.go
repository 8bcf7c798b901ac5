package noise

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/flynn/noise"

	"github.com/keytunnel/keytunnel/internal/key"
)

// pair returns a fresh initiator and responder with the fixed test keys.
func pair(t testing.TB, pat Pattern) (ini, res *Handshake) {
	t.Helper()
	var prologue []byte
	icfg := Config{Pattern: pat, Initiator: true, KeyPair: seeded(1)}
	if pat == IK {
		prologue = NSPeerHandshake[:]
		icfg.RemoteKey = seeded(2).Public
	}
	icfg.Prologue = prologue
	ini, err := New(icfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err = New(Config{Pattern: pat, KeyPair: seeded(2), Prologue: prologue})
	if err != nil {
		t.Fatal(err)
	}
	return ini, res
}

// runCorrupted runs a handshake in which message `at` (0-based) goes
// through corrupt, and returns the first error and the message index at
// which it happened (-1 if the handshake completed).
func runCorrupted(t testing.TB, pat Pattern, at int, corrupt func([]byte) []byte) (int, error) {
	ini, res := pair(t, pat)
	sides := []*Handshake{ini, res}
	for i := range len(layouts[pat]) {
		w, r := sides[i%2], sides[(i+1)%2]
		msg, err := w.WriteMessage(nil, []byte("payload"))
		if err != nil {
			return i, err
		}
		if i == at {
			msg = corrupt(msg)
		}
		if _, err := r.ReadMessage(nil, msg); err != nil {
			if _, err2 := r.ReadMessage(nil, msg); err2 == nil {
				t.Errorf("message %d: a failed handshake read another message", i+1)
			}
			return i, err
		}
	}
	ri, _ := ini.Result()
	rr, _ := res.Result()
	if ri.Tx != rr.Rx || ri.Hash != rr.Hash {
		// The corruption went through unnoticed but the sides disagree:
		// the first use of the keys would fail. Report it as a failure at
		// the end of the handshake.
		return len(layouts[pat]), errors.New("keys disagree")
	}
	return -1, nil
}

// TestCorruptedMessages truncates every message of both patterns to every
// shorter length, and flips every bit of it. Each must be refused by the
// reader of that message, except where Noise has nothing to check yet: XX
// message 1 is e in the clear plus a clear payload, so a cut payload or a
// flipped bit there is only caught when the responder's reply fails to
// authenticate (or its ee DH fails), exactly as with noise-handshake.
func TestCorruptedMessages(t *testing.T) {
	for _, pat := range []Pattern{IK, XX} {
		for at, l := range layouts[pat] {
			ini, _ := pair(t, pat)
			m, _ := ini.WriteMessage(nil, []byte("payload"))
			n := len(m)
			if at > 0 {
				n = l.prefix + len("payload") + tagLen
			}
			for cut := range n {
				i, err := runCorrupted(t, pat, at, func(m []byte) []byte { return m[:cut] })
				want := at
				if pat == XX && at == 0 && cut >= l.prefix {
					want = 1 // the cut clear payload is in h, which message 2 authenticates
				}
				if i != want || !errors.Is(err, ErrMessage) {
					t.Errorf("%v msg %d cut to %d: failed at %d with %v", pat, at+1, cut, i+1, err)
				}
			}
			// One bit of every byte, a different bit each time: every
			// field is hit, at a cost the race detector can bear.
			for j := range n {
				bit := j*8 + j%8
				i, err := runCorrupted(t, pat, at, func(m []byte) []byte {
					m[bit/8] ^= 1 << (bit % 8)
					return m
				})
				switch {
				case err == nil:
					t.Errorf("%v msg %d bit %d flipped: accepted", pat, at+1, bit)
				case pat == XX && at == 0:
					// A flipped e is refused by the responder's ee DH
					// (writing message 2) or, if still a good point, makes
					// message 2 fail to authenticate; a flipped clear
					// payload is in h, which message 2 authenticates.
					if i != 1 {
						t.Errorf("XX msg 1 bit %d flipped: failed at %d with %v", bit, i+1, err)
					}
				case i != at || !errors.Is(err, ErrMessage):
					t.Errorf("%v msg %d bit %d flipped: failed at %d with %v", pat, at+1, bit, i+1, err)
				}
			}
			// Appended bytes are a longer payload: they fail authentication
			// wherever the payload is encrypted.
			i, err := runCorrupted(t, pat, at, func(m []byte) []byte { return append(m, 0) })
			if l.keyed && (i != at || !errors.Is(err, ErrMessage)) {
				t.Errorf("%v msg %d with a byte appended: failed at %d with %v", pat, at+1, i+1, err)
			}
		}
	}
}

// TestSmallOrderEphemeral puts each torsion point, and a point outside the
// prime-order subgroup, where a message's e goes. The first DH with it
// refuses: on reading IK messages and XX message 2, on writing XX
// message 2 (the responder reads XX message 1's e without any DH).
func TestSmallOrderEphemeral(t *testing.T) {
	bad := append(torsion(t), mixedOrder(t, 3))
	for _, pat := range []Pattern{IK, XX} {
		for at, l := range layouts[pat] {
			if l.prefix == 48 {
				continue // XX message 3 has no e
			}
			for j, p := range bad {
				i, err := runCorrupted(t, pat, at, func(m []byte) []byte { copy(m, p); return m })
				want := at
				if pat == XX && at == 0 {
					want = 1
				}
				if i != want || !errors.Is(err, ErrBadPoint) {
					t.Errorf("%v msg %d, e = bad point %d: failed at %d with %v", pat, at+1, j, i+1, err)
				}
			}
		}
	}
}

// rawStatic writes the handshake messages of a sender whose static public
// key is a bad point, with flynn/noise directly (New would refuse such a
// key pair). The sender can still compute every DH it needs with its own
// valid scalar; it is the receiver's DH against the bad rs that must fail.
func rawStatic(t *testing.T, pat noise.HandshakePattern, initiator bool, bad []byte, peer key.PublicKey) *noise.HandshakeState {
	t.Helper()
	cfg := noise.Config{
		CipherSuite:   suite,
		Pattern:       pat,
		Initiator:     initiator,
		StaticKeypair: noise.DHKey{Private: seeded(7).Private, Public: bad},
	}
	if pat.Name == "IK" {
		cfg.Prologue = NSPeerHandshake[:]
		cfg.PeerStatic = peer[:]
	}
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// TestBadStaticKey: a peer that sends a small-order or mixed-order static
// key inside an authentic message (anyone who knows the server's key can
// build IK message 1) is refused at the receiver's first DH with it.
func TestBadStaticKey(t *testing.T) {
	bad := append(torsion(t)[1:], mixedOrder(t, 5))
	for j, p := range bad {
		// IK message 1: the server reads s, then ss fails.
		hs := rawStatic(t, noise.HandshakeIK, true, p, seeded(2).Public)
		m1, _, _, err := hs.WriteMessage(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, res := pair(t, IK)
		if _, err := res.ReadMessage(nil, m1); !errors.Is(err, ErrBadPoint) {
			t.Errorf("IK initiator static = bad point %d: %v", j, err)
		}

		// XX message 2: the initiator reads s, then es fails.
		ini, _ := pair(t, XX)
		m1, _ = ini.WriteMessage(nil, nil)
		hs = rawStatic(t, noise.HandshakeXX, false, p, key.PublicKey{})
		if _, _, _, err := hs.ReadMessage(nil, m1); err != nil {
			t.Fatal(err)
		}
		m2, _, _, err := hs.WriteMessage(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ini.ReadMessage(nil, m2); !errors.Is(err, ErrBadPoint) {
			t.Errorf("XX responder static = bad point %d: %v", j, err)
		}

		// XX message 3: the responder reads s, then se fails.
		_, res = pair(t, XX)
		hs = rawStatic(t, noise.HandshakeXX, true, p, key.PublicKey{})
		m1, _, _, _ = hs.WriteMessage(nil, nil)
		if _, err := res.ReadMessage(nil, m1); err != nil {
			t.Fatal(err)
		}
		m2, _ = res.WriteMessage(nil, nil)
		if _, _, _, err := hs.ReadMessage(nil, m2); err != nil {
			t.Fatal(err)
		}
		m3, _, _, err := hs.WriteMessage(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := res.ReadMessage(nil, m3); !errors.Is(err, ErrBadPoint) {
			t.Errorf("XX initiator static = bad point %d: %v", j, err)
		}
	}
}

// TestWrongKeyOrPrologue: an IK client that dials another key, or uses
// another prologue, is refused by the server at message 1.
func TestWrongKeyOrPrologue(t *testing.T) {
	_, res := pair(t, IK)
	c, _ := New(Config{Pattern: IK, Initiator: true, KeyPair: seeded(1), RemoteKey: seeded(3).Public, Prologue: NSPeerHandshake[:]})
	m, _ := c.WriteMessage(nil, []byte("hi"))
	if _, err := res.ReadMessage(nil, m); !errors.Is(err, ErrMessage) {
		t.Errorf("message for another server key: %v", err)
	}
	for _, pat := range []Pattern{IK, XX} {
		ini, _ := pair(t, pat)
		cfg := Config{Pattern: pat, KeyPair: seeded(2), Prologue: []byte("other")}
		res, _ := New(cfg)
		m, _ := ini.WriteMessage(nil, nil)
		_, err := res.ReadMessage(nil, m)
		if pat == XX && err == nil {
			// XX message 1 is unauthenticated; message 2 carries h.
			m, _ = res.WriteMessage(nil, nil)
			_, err = ini.ReadMessage(nil, m)
		}
		if !errors.Is(err, ErrMessage) {
			t.Errorf("%v with another prologue: %v", pat, err)
		}
	}
}

// TestSizeLimits: noise-handshake 4.2.0 refuses ciphertexts over 65535
// bytes, on both ends. A payload of 65519 bytes (ciphertext 65535) goes
// through; one byte more is refused on write without spending the
// handshake, and a message whose ciphertext is too long is refused on
// read before any decryption.
func TestSizeLimits(t *testing.T) {
	for _, pat := range []Pattern{IK, XX} {
		ini, res := pair(t, pat)
		sides := []*Handshake{ini, res}
		for i, l := range layouts[pat] {
			w, r := sides[i%2], sides[(i+1)%2]
			if l.keyed {
				if _, err := w.WriteMessage(nil, make([]byte, MaxCiphertext-tagLen+1)); !errors.Is(err, ErrMessage) || !strings.Contains(err.Error(), "exceeds") {
					t.Fatalf("%v msg %d: oversized payload: %v", pat, i+1, err)
				}
				// The reader refuses a too-long message outright; try it
				// on a copy of the reader's state first.
				big := make([]byte, l.prefix+MaxCiphertext+1)
				probe := *r
				if _, err := (&probe).ReadMessage(nil, big); !errors.Is(err, ErrMessage) || !strings.Contains(err.Error(), "exceeds") {
					t.Fatalf("%v msg %d: oversized message: %v", pat, i+1, err)
				}
			}
			n := MaxCiphertext - tagLen
			if !l.keyed {
				n = 70000 // no limit in noise-handshake; flynn/noise's is 65535
				if _, err := w.WriteMessage(nil, make([]byte, n)); err == nil {
					t.Fatalf("%v msg %d: flynn/noise took a %d-byte clear payload", pat, i+1, n)
				}
				ini, res = pair(t, pat)
				sides = []*Handshake{ini, res}
				w, r = sides[0], sides[1]
				n = 65535
			}
			m, err := w.WriteMessage(nil, bytes.Repeat([]byte{byte(i)}, n))
			if err != nil {
				t.Fatalf("%v msg %d: payload of %d: %v", pat, i+1, n, err)
			}
			if want := l.prefix + n + map[bool]int{true: tagLen}[l.keyed]; len(m) != want {
				t.Fatalf("%v msg %d: %d bytes, want %d", pat, i+1, len(m), want)
			}
			pl, err := r.ReadMessage(nil, m)
			if err != nil || len(pl) != n {
				t.Fatalf("%v msg %d: read %d bytes: %v", pat, i+1, len(pl), err)
			}
		}
		if !ini.Complete() || !res.Complete() {
			t.Fatalf("%v: not complete", pat)
		}
	}
	// A clear XX message 1 larger than any ciphertext limit is read, as
	// noise-handshake reads it.
	_, res := pair(t, XX)
	e := seeded(3).Public
	if pl, err := res.ReadMessage(nil, append(e[:], make([]byte, 70000)...)); err != nil || len(pl) != 70000 {
		t.Fatalf("large clear XX message 1: %d %v", len(pl), err)
	}
}

// TestOutOfTurn: calls against the pattern's order are refused without
// spending the handshake.
func TestOutOfTurn(t *testing.T) {
	ini, res := pair(t, IK)
	if _, err := ini.ReadMessage(nil, make([]byte, 100)); !errors.Is(err, ErrState) {
		t.Errorf("initiator reading first: %v", err)
	}
	if _, err := res.WriteMessage(nil, nil); !errors.Is(err, ErrState) {
		t.Errorf("responder writing first: %v", err)
	}
	if _, err := ini.Result(); !errors.Is(err, ErrState) {
		t.Errorf("result before completion: %v", err)
	}
	m, err := ini.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ini.WriteMessage(nil, nil); !errors.Is(err, ErrState) {
		t.Errorf("writing twice: %v", err)
	}
	if _, err := res.ReadMessage(nil, m); err != nil {
		t.Fatal(err)
	}
	m, _ = res.WriteMessage(nil, nil)
	if _, err := ini.ReadMessage(nil, m); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Handshake{ini, res} {
		if _, err := h.WriteMessage(nil, nil); !errors.Is(err, ErrState) {
			t.Errorf("writing after completion: %v", err)
		}
		if _, err := h.ReadMessage(nil, m); !errors.Is(err, ErrState) {
			t.Errorf("reading after completion: %v", err)
		}
		if _, err := h.Result(); err != nil {
			t.Errorf("result after completion: %v", err)
		}
	}
}

// TestBadConfig: New refuses what cannot work, before any message.
func TestBadConfig(t *testing.T) {
	kp := seeded(1)
	mismatched := key.KeyPair{Public: seeded(2).Public, Private: kp.Private}
	cases := []struct {
		name string
		cfg  Config
		want error
	}{
		{"no private key", Config{Pattern: XX, KeyPair: key.KeyPair{Public: kp.Public}}, ErrConfig},
		{"short private key", Config{Pattern: XX, KeyPair: key.KeyPair{Public: kp.Public, Private: kp.Private[:32]}}, ErrConfig},
		{"mismatched key pair", Config{Pattern: XX, KeyPair: mismatched}, ErrConfig},
		{"bad ephemeral", Config{Pattern: XX, KeyPair: kp, Ephemeral: &key.KeyPair{}}, ErrConfig},
		{"unknown pattern", Config{Pattern: 7, KeyPair: kp}, ErrConfig},
		{"IK without remote key", Config{Pattern: IK, Initiator: true, KeyPair: kp}, ErrConfig},
	}
	for i, p := range append(torsion(t)[1:], mixedOrder(t, 1), nonCanonical()[0]) {
		var k key.PublicKey
		copy(k[:], p)
		cases = append(cases, struct {
			name string
			cfg  Config
			want error
		}{fmt.Sprintf("IK to bad point %d", i), Config{Pattern: IK, Initiator: true, KeyPair: kp, RemoteKey: k}, ErrBadPoint})
		if k.IsZero() {
			// One order-4 point, (sqrt(-1), 0), encodes as all zeros,
			// which reads as no key at all.
			cases[len(cases)-1].want = ErrConfig
		}
	}
	for _, c := range cases {
		if _, err := New(c.cfg); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
