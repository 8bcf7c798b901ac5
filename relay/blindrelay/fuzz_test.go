package blindrelay

import (
	"bytes"
	"errors"
	"testing"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// FuzzDecodePair: decoding never panics; refused input says ErrMalformed;
// whatever decodes re-encodes to a body that decodes to the same value,
// and that canonical body is never longer than the input.
func FuzzDecodePair(f *testing.F) {
	for _, p := range pairSamples {
		f.Add(AppendPair(nil, p))
	}
	f.Add(append([]byte{0xfd, 1, 0}, AppendPair(nil, Pair{Token: fill32(3), ID: 1<<64 - 1})[1:]...))
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := DecodePair(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		re := AppendPair(nil, p)
		p2, err := DecodePair(re)
		if err != nil || p2 != p {
			t.Fatalf("re-encoding %x decodes to %+v, %v; want %+v", re, p2, err, p)
		}
		if len(re) > len(in) {
			t.Fatalf("re-encoding %x longer than input %x", re, in)
		}
		if !bytes.Equal(AppendPair(nil, p2), re) {
			t.Fatalf("re-encoding not stable")
		}
	})
}

// FuzzDecodeUnpair: as FuzzDecodePair for unpair.
func FuzzDecodeUnpair(f *testing.F) {
	for _, u := range unpairSamples {
		f.Add(AppendUnpair(nil, u))
	}
	f.Add(append([]byte{0xfe, 0, 0, 0, 0}, make([]byte, 32)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		u, err := DecodeUnpair(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		re := AppendUnpair(nil, u)
		u2, err := DecodeUnpair(re)
		if err != nil || u2 != u || len(re) > len(in) {
			t.Fatalf("re-encoding %x decodes to %+v, %v; want %+v", re, u2, err, u)
		}
	})
}
