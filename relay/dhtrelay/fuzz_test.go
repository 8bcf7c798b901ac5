package dhtrelay

import (
	"bytes"
	"errors"
	"runtime"
	"testing"

	"github.com/keytunnel/keytunnel/internal/compact"
)

// FuzzDecodeMessage: in[0] is the type, the rest the body. Decoding must
// never panic; whatever decodes must re-encode to bytes that decode to the
// same value (re-encoding is idempotent), and refused input must say
// ErrMalformed or ErrUnknownType.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range samples {
		f.Add(append([]byte{byte(m.Type())}, m.AppendBody(nil)...))
	}
	f.Add([]byte{byte(TypeData), 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{byte(TypeResult), 5, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{NumTypes})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		typ, body := Type(in[0]), in[1:]
		m, err := DecodeMessage(typ, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if m.Type() != typ {
			t.Fatalf("decoded type %s, want %s", m.Type(), typ)
		}
		re := m.AppendBody(nil)
		m2, err := DecodeMessage(typ, re)
		if err != nil {
			t.Fatalf("re-encoded %x does not decode: %v", re, err)
		}
		if re2 := m2.AppendBody(nil); !bytes.Equal(re, re2) {
			t.Fatalf("re-encoding not stable: %x then %x", re, re2)
		}
		// A canonical body (defined flag bits only, minimal varints, no
		// trailing bytes) must re-encode to itself.
		if len(re) > len(body) {
			t.Fatalf("re-encoding %x is longer than the input %x", re, body)
		}
	})
}

func FuzzDecodeAnnouncers(f *testing.F) {
	for _, a := range announcersSamples {
		f.Add(a.Append(nil))
	}
	f.Add(AppendPeer(nil, peerSample))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := DecodeAnnouncers(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		re := a.Append(nil)
		a2, err := DecodeAnnouncers(re)
		if err != nil || !bytes.Equal(a2.Append(nil), re) {
			t.Fatalf("re-encoding not stable: %x (%v)", re, err)
		}
		if p, err := DecodePeer(in); err == nil && len(AppendPeer(nil, p)) > len(in) {
			t.Fatalf("peer re-encoding longer than input")
		}
	})
}

// allocatedBytes reports the heap bytes fn allocates.
func allocatedBytes(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// Lengths and counts beyond the body are refused with a clear error,
// before anything is allocated for them.
func TestHugeLengths(t *testing.T) {
	cases := []struct {
		t    Type
		body []byte
	}{
		{TypeData, []byte{2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}},
		{TypeData, []byte{2, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x7f, 0}},
		{TypeData, []byte{2, 0, 0, 0, 1, 0xfe, 0xff, 0xff, 0xff, 0x7f}},
		{TypeResult, []byte{5, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff}},
		{TypeSignature, []byte{5, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x80}},
		{TypeDestroy, []byte{3, 5, 0, 0, 0, 0xfe, 0, 0, 0, 0x10}},
		{TypeSignAnnounce, append(append(make([]byte, 8), make([]byte, 32)...), 0, 0xfe, 0, 0, 0x10, 0)},
	}
	for _, c := range cases {
		var err error
		n := allocatedBytes(func() { _, err = DecodeMessage(c.t, c.body) })
		if !errors.Is(err, ErrMalformed) || !errors.Is(err, compact.ErrTooLong) {
			t.Errorf("%s %x: err %v, want ErrMalformed and compact.ErrTooLong", c.t, c.body, err)
		}
		if n > 64<<10 { // the error values only; a length-sized buffer would be GiBs
			t.Errorf("%s: %d bytes allocated for a refused body", c.t, n)
		}
	}
	if _, err := DecodeAnnouncers(append(make([]byte, 32+7+7), 0xfe, 0xff, 0xff, 0xff, 0xff)); !errors.Is(err, compact.ErrTooLong) {
		t.Errorf("announcers: %v", err)
	}
}

func TestTruncatedAlwaysFails(t *testing.T) {
	for name, m := range samples {
		body := m.AppendBody(nil)
		for i := range body {
			if _, err := DecodeMessage(m.Type(), body[:i]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut at %d/%d: err %v", name, i, len(body), err)
			}
		}
	}
	if _, err := DecodeMessage(NumTypes, nil); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
}
