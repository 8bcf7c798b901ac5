package secretstream

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func vectorKeyHeader() (k [KeySize]byte, h [HeaderSize]byte) {
	for i := range k {
		k[i] = byte(i)
	}
	for i := range h {
		h[i] = 0xa0 + byte(i)
	}
	return
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sealFast runs the in-place fast path on a copy of m.
func sealFast(s *xstream, m []byte, tag byte) []byte {
	buf := make([]byte, headroom+len(m), headroom+len(m)+16)
	copy(buf[headroom:], m)
	return append([]byte(nil), s.sealInPlace(buf, tag)...)
}

func openFast(s *xstream, c []byte) ([]byte, byte, error) {
	buf := make([]byte, headroom-1+len(c))
	copy(buf[headroom-1:], c)
	m, tag, err := s.openInPlace(buf)
	return append([]byte(nil), m...), tag, err
}

// The sheet's §4.6 vector, verified there against libsodium's pull.
func TestPushVector(t *testing.T) {
	k, h := vectorKeyHeader()
	want := []string{"3577292f11bd9293b3c24f3eb215174c9788b7c084ac", "8f317c591968624efe0a306e5322d722b9"}
	msgs := [][]byte{[]byte("hello"), {}}
	for _, fast := range []bool{false, true} {
		var s xstream
		s.init(&k, &h)
		for i, m := range msgs {
			var c []byte
			if fast {
				c = sealFast(&s, m, TagMessage)
			} else {
				c = s.push(nil, m, TagMessage)
			}
			if got := hex.EncodeToString(c); got != want[i] {
				t.Errorf("fast=%v push %d = %s, want %s", fast, i, got, want[i])
			}
		}
		var p xstream
		p.init(&k, &h)
		for i, w := range want {
			var m []byte
			var tag byte
			var err error
			if fast {
				m, tag, err = openFast(&p, unhex(t, w))
			} else {
				m, tag, err = p.pull(nil, unhex(t, w))
			}
			if err != nil || tag != TagMessage || !bytes.Equal(m, msgs[i]) {
				t.Errorf("fast=%v pull %d = %q, %d, %v", fast, i, m, tag, err)
			}
		}
	}
}

// The fast AEAD path and the step-by-step path agree on every size around
// block and Poly1305 boundaries, for every tag, including rekeys.
func TestFastMatchesReference(t *testing.T) {
	k, h := vectorKeyHeader()
	var a, b, pa, pb xstream
	a.init(&k, &h)
	b.init(&k, &h)
	pa.init(&k, &h)
	pb.init(&k, &h)
	for n := 0; n < 300; n++ {
		m := bytes.Repeat([]byte{byte(n)}, n)
		tag := byte(n % 4)
		c1 := a.push(nil, m, tag)
		c2 := sealFast(&b, m, tag)
		if !bytes.Equal(c1, c2) {
			t.Fatalf("size %d tag %d: paths differ", n, tag)
		}
		m1, t1, err1 := pa.pull(nil, c1)
		m2, t2, err2 := openFast(&pb, c1)
		if err1 != nil || err2 != nil || t1 != tag || t2 != tag || !bytes.Equal(m1, m) || !bytes.Equal(m2, m) {
			t.Fatalf("size %d: pull %v %v tags %d %d", n, err1, err2, t1, t2)
		}
	}
	if a.k != b.k || a.nonce != b.nonce || a.k != pa.k || pa.nonce != pb.nonce || a.nonce != pa.nonce {
		t.Fatal("states diverged")
	}
}

func TestCounterWrapRekeys(t *testing.T) {
	k, h := vectorKeyHeader()
	var a, b xstream
	a.init(&k, &h)
	b.init(&k, &h)
	// Put both at counter 0xffffffff: the next message wraps and rekeys.
	a.nonce[0], a.nonce[1], a.nonce[2], a.nonce[3] = 0xff, 0xff, 0xff, 0xff
	b.nonce = a.nonce
	oldK := a.k
	c := a.push(nil, []byte("x"), TagMessage)
	if a.k == oldK || a.nonce[0] != 1 {
		t.Fatal("no rekey on counter wrap")
	}
	if _, _, err := b.pull(nil, c); err != nil || b.k != a.k || b.nonce != a.nonce {
		t.Fatal("pull did not follow the rekey", err)
	}
}

func TestPullRejects(t *testing.T) {
	k, h := vectorKeyHeader()
	var s xstream
	s.init(&k, &h)
	c := s.push(nil, []byte("hello world"), TagMessage)
	fresh := func() *xstream { var p xstream; p.init(&k, &h); return &p }
	cases := map[string][]byte{
		"truncated":   c[:len(c)-1],
		"short":       c[:16],
		"empty":       nil,
		"flipped tag": append([]byte{c[0] ^ 1}, c[1:]...),
		"flipped ct":  append(append(append([]byte(nil), c[:3]...), c[3]^0x80), c[4:]...),
		"forged mac":  append(append([]byte(nil), c[:len(c)-16]...), make([]byte, 16)...),
	}
	for name, in := range cases {
		for _, fast := range []bool{false, true} {
			p := fresh()
			before := *p
			var err error
			if fast {
				_, _, err = openFast(p, in)
			} else {
				_, _, err = p.pull(nil, in)
			}
			want := ErrDecrypt
			if len(in) < Overhead {
				want = ErrShortMessage
			}
			if !errors.Is(err, want) {
				t.Errorf("%s fast=%v: err %v, want %v", name, fast, err, want)
			}
			if p.k != before.k || p.nonce != before.nonce {
				t.Errorf("%s fast=%v: state changed on failure", name, fast)
			}
		}
	}
	// Wrong key.
	k2 := k
	k2[0] ^= 1
	var w xstream
	w.init(&k2, &h)
	if _, _, err := w.pull(nil, c); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong key: %v", err)
	}
}

func TestXstreamZeroAlloc(t *testing.T) {
	k, h := vectorKeyHeader()
	var s, p xstream
	s.init(&k, &h)
	p.init(&k, &h)
	const n = 16 << 10
	buf := make([]byte, headroom+n, headroom+n+16)
	ref := make([]byte, 0, n+Overhead)
	out := make([]byte, 0, n)
	allocs := testing.AllocsPerRun(100, func() {
		c := s.sealInPlace(buf[:headroom+n], TagMessage)
		if _, _, err := p.openInPlace(buf[:headroom-1+len(c)]); err != nil {
			t.Fatal(err)
		}
		c2 := s.push(ref[:0], buf[headroom:headroom+n], TagMessage)
		if _, _, err := p.pull(out[:0], c2); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message pair, want 0", allocs)
	}
}
