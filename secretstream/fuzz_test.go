package secretstream

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzFrameReader feeds arbitrary bytes, in arbitrary read sizes, through
// the frame parser: it must never panic, must return bodies within the
// limit that tile the input exactly, and must fail only with the
// documented errors.
func FuzzFrameReader(f *testing.F) {
	var s xstream
	k, h := vectorKeyHeader()
	s.init(&k, &h)
	for _, n := range []int{0, 1, 5, 100, 5000} {
		c := s.push(nil, bytes.Repeat([]byte{1}, n), TagMessage)
		f.Add(append(appendU24(nil, len(c)), c...), uint8(7), uint16(1000))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 1, 2, 3}, uint8(1), uint16(100))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 3, 0}, uint8(2), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, limit uint16) {
		var r io.Reader = bytes.NewReader(data)
		if chunk%3 == 0 {
			r = iotest.OneByteReader(r)
		} else if chunk%3 == 1 {
			r = iotest.HalfReader(r)
		}
		var fr frameReader
		pos := 0
		for {
			s, e, err := fr.next(r, int(limit))
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if e-s > int(limit) || s < headroom-1+3 {
				t.Fatalf("body [%d:%d] breaks the limit or the headroom", s, e)
			}
			body := fr.buf[s:e]
			if pos+3+len(body) > len(data) || !bytes.Equal(body, data[pos+3:pos+3+len(body)]) {
				t.Fatalf("frame at %d does not match the input", pos)
			}
			pos += 3 + len(body)
		}
	})
}

// FuzzPull: arbitrary ciphertexts after a valid prefix must fail cleanly
// (never panic, state unchanged) unless they are the genuine message, and
// both pull paths must agree.
func FuzzPull(f *testing.F) {
	k, h := vectorKeyHeader()
	var s xstream
	s.init(&k, &h)
	for _, n := range []int{0, 1, 8, 16, 17, 100, 1000} {
		f.Add(s.push(nil, bytes.Repeat([]byte{2}, n), byte(n%4)))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		var a, b xstream
		a.init(&k, &h)
		b.init(&k, &h)
		m1, tag1, err1 := a.pull(nil, in)
		m2, tag2, err2 := openFast(&b, in)
		if (err1 == nil) != (err2 == nil) || a.k != b.k || a.nonce != b.nonce {
			t.Fatalf("paths disagree: %v / %v", err1, err2)
		}
		if err1 != nil {
			if !errors.Is(err1, ErrDecrypt) && !errors.Is(err1, ErrShortMessage) {
				t.Fatalf("unexpected error %v", err1)
			}
			var fresh xstream
			fresh.init(&k, &h)
			if a.k != fresh.k || a.nonce != fresh.nonce {
				t.Fatal("state changed on failure")
			}
			return
		}
		if tag1 != tag2 || !bytes.Equal(m1, m2) {
			t.Fatal("paths decrypt differently")
		}
	})
}

// FuzzOpenDatagram: OpenDatagram never panics on an arbitrary envelope,
// accepts only what SealDatagram made under the key (its re-sealing under
// the envelope's counter gives the envelope back), and leaves dst as it
// was when it refuses. The input is also sealed as a plaintext, which
// must open to itself under the receiving side's Datagrams.
func FuzzOpenDatagram(f *testing.F) {
	key := [32]byte{1, 2, 3}
	for i, n := range []int{0, 1, 16, 100, 1200} {
		f.Add(SealDatagram(nil, &key, [DatagramCounterSize]byte{byte(i), 0xff}, bytes.Repeat([]byte{byte(n)}, n)))
	}
	f.Add(make([]byte, minEnvelope-1))
	f.Add(make([]byte, minEnvelope))
	var hash [HashSize]byte
	send, err := NewDatagrams(&hash, true, bytes.NewReader(make([]byte, 8)))
	if err != nil {
		f.Fatal(err)
	}
	recv, err := NewDatagrams(&hash, false, bytes.NewReader(make([]byte, 8)))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		dst := []byte("dst")
		out, ok := OpenDatagram(dst, &key, in)
		if !ok {
			if !bytes.Equal(out, []byte("dst")) {
				t.Fatalf("refused envelope changed dst to %x", out)
			}
		} else {
			if len(in) < DatagramOverhead || len(out) != len(dst)+len(in)-DatagramOverhead {
				t.Fatalf("envelope of %d bytes opened to %d", len(in), len(out)-len(dst))
			}
			if re := SealDatagram(nil, &key, [DatagramCounterSize]byte(in[:DatagramCounterSize]), out[len(dst):]); !bytes.Equal(re, in) {
				t.Fatalf("opened %x, which re-seals to %x", in, re)
			}
		}
		env, err := send.Seal(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		if pt, ok := recv.Open(nil, env); !ok || !bytes.Equal(pt, in) {
			t.Fatalf("sealed %x did not open to itself (ok %v)", in, ok)
		}
	})
}
