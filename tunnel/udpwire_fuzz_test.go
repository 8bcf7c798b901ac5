package tunnel

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzStreamHeader reads a stream header from fuzzed bytes: no panic,
// and a header it accepts re-encodes to one that reads back the same.
func FuzzStreamHeader(f *testing.F) {
	f.Add(appendStreamHeader(nil, streamHeader{kind: kindTCP}))
	f.Add(appendStreamHeader(nil, streamHeader{kind: kindUDP, flow: 7}))
	f.Add(appendStreamHeader(nil, streamHeader{kind: kindUDP, flow: 1<<32 - 1, service: "dns"}))
	f.Add(appendStreamHeader(nil, streamHeader{kind: kindTCP, service: strings.Repeat("s", 300), flags: 1 << 40}))
	f.Add(append(appendStreamHeader(nil, streamHeader{kind: kindUDP, flow: 300}), "extension"...))
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := readStreamHeader(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("%q: %v is not ErrProtocol", in, err)
			}
			return
		}
		again, err := readStreamHeader(bytes.NewReader(appendStreamHeader(nil, h)))
		if err != nil || again != h {
			t.Fatalf("%+v re-reads as %+v, %v", h, again, err)
		}
	})
}

// FuzzStreamReply: only a complete reply is ok or refused, and reading
// never panics.
func FuzzStreamReply(f *testing.F) {
	f.Add(appendStreamReply(nil, replyOK, ""))
	f.Add(appendStreamReply(nil, replyRefused, "no service \"x\" behind this key"))
	f.Add([]byte{9, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		err := readStreamReply(bytes.NewReader(in))
		complete := len(in) >= 2 && len(in) >= 2+int(in[1])
		switch {
		case !complete && !errors.Is(err, ErrProtocol):
			t.Fatalf("%q: %v, want ErrProtocol", in, err)
		case complete && in[0] == replyOK && err != nil:
			t.Fatalf("%q: %v", in, err)
		case complete && in[0] == replyRefused && !errors.Is(err, ErrRefused):
			t.Fatalf("%q: %v, want ErrRefused", in, err)
		}
	})
}

// FuzzFlowDatagram: a datagram that parses re-encodes to one that parses
// the same.
func FuzzFlowDatagram(f *testing.F) {
	f.Add(appendFlowDatagram(nil, 0, []byte("query")))
	f.Add(appendFlowDatagram(nil, 1<<32-1, nil))
	f.Add([]byte{2, 0, 1})
	f.Add([]byte{1, 0xff, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, in []byte) {
		id, p, ok := parseFlowDatagram(in)
		if !ok {
			return
		}
		id2, p2, ok := parseFlowDatagram(appendFlowDatagram(nil, id, p))
		if !ok || id2 != id || !bytes.Equal(p, p2) {
			t.Fatalf("%q: (%d, %q) re-parses as (%d, %q, %v)", in, id, p, id2, p2, ok)
		}
	})
}

// FuzzReadFrame reads both framings from fuzzed bytes: frames are within
// bounds, and re-encoding them gives back the bytes they were read from.
func FuzzReadFrame(f *testing.F) {
	f.Add(ktFraming.appendFrame(ktFraming.appendFrame(nil, []byte("a")), []byte("bc")), false)
	f.Add(holesailFraming.appendFrame(nil, []byte("holesail")), true)
	f.Add([]byte{0, 1, 0, 0, 0}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, true)
	f.Fuzz(func(t *testing.T, in []byte, hs bool) {
		fr := framing(hs)
		r := bufio.NewReader(bytes.NewReader(in))
		buf := make([]byte, maxDatagram)
		var out []byte
		for {
			p, err := fr.readFrame(r, buf)
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && err != errFrameTooLarge {
					t.Fatalf("%q: %v", in, err)
				}
				break
			}
			if len(p) > maxDatagram {
				t.Fatalf("frame of %d bytes", len(p))
			}
			out = fr.appendFrame(out, p)
		}
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("%q: frames re-encode to %q", in, out)
		}
	})
}
