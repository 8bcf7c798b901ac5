package secretstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/secretstream/noise"
)

// rawPeer plays the initiator by hand against a Go responder over
// net.Pipe: it writes whatever bytes a case wants, and the test reads the
// responder's error.
type rawPeer struct {
	res  noise.Result // the initiator's result
	push xstream
	hdr  []byte // a valid header frame for res
}

func newRawPeer(t *testing.T) (*rawPeer, noise.Result) {
	ini, resp := fakeResults(t)
	p := &rawPeer{res: ini}
	var h [HeaderSize]byte
	rand.Read(h[:])
	p.push.init(&ini.Tx, &h)
	id := StreamID(&ini.Hash, true)
	p.hdr = append(append(appendU24(nil, headerBodyLen), id[:]...), h[:]...)
	return p, resp
}

func (p *rawPeer) frame(m []byte) []byte {
	c := p.push.push(nil, m, TagMessage)
	return append(appendU24(nil, len(c)), c...)
}

// readErr runs a Go responder against wire bytes and returns what its
// reads end with, and the data read before that.
func readErr(t *testing.T, resp noise.Result, opts Options, wire []byte, closeAfter bool) ([]byte, error) {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	opts.Handshake = &resp
	c, err := New(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		b.Write(wire)
		if closeAfter {
			b.Close()
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
}

func TestBadInput(t *testing.T) {
	conntest.CheckGoroutines(t)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	type tc struct {
		name  string
		wire  func(p *rawPeer) []byte
		want  error
		phase Phase
		opts  Options
	}
	cases := []tc{
		{"truncated data frame", func(p *rawPeer) []byte {
			f := p.frame([]byte("hello"))
			return cat(p.hdr, f[:len(f)-3])
		}, ErrTruncated, PhaseData, Options{}},
		{"truncated length prefix", func(p *rawPeer) []byte { return cat(p.hdr, []byte{5, 0}) }, ErrTruncated, PhaseData, Options{}},
		{"truncated header", func(p *rawPeer) []byte { return p.hdr[:40] }, ErrTruncated, PhaseHeader, Options{}},
		{"corrupted ciphertext", func(p *rawPeer) []byte {
			f := p.frame([]byte("hello"))
			f[5] ^= 0x40
			return cat(p.hdr, f)
		}, ErrDecrypt, PhaseData, Options{}},
		{"forged MAC", func(p *rawPeer) []byte {
			f := p.frame([]byte("hello"))
			copy(f[len(f)-16:], make([]byte, 16))
			return cat(p.hdr, f)
		}, ErrDecrypt, PhaseData, Options{}},
		{"forged tag byte", func(p *rawPeer) []byte {
			f := p.frame([]byte("hello"))
			f[3] ^= 2 // would turn MESSAGE into REKEY
			return cat(p.hdr, f)
		}, ErrDecrypt, PhaseData, Options{}},
		{"wrong key", func(p *rawPeer) []byte {
			var other xstream
			k := p.res.Tx
			k[0] ^= 1
			var h [HeaderSize]byte
			copy(h[:], p.hdr[35:])
			other.init(&k, &h)
			c := other.push(nil, []byte("hello"), TagMessage)
			return cat(p.hdr, appendU24(nil, len(c)), c)
		}, ErrDecrypt, PhaseData, Options{}},
		{"replayed frame", func(p *rawPeer) []byte {
			f := p.frame([]byte("hello"))
			return cat(p.hdr, f, f)
		}, ErrDecrypt, PhaseData, Options{}},
		{"short data frame", func(p *rawPeer) []byte { return cat(p.hdr, []byte{16, 0, 0}, make([]byte, 16)) }, ErrShortMessage, PhaseData, Options{}},
		{"wrong stream id", func(p *rawPeer) []byte {
			h := bytes.Clone(p.hdr)
			id := StreamID(&p.res.Hash, false) // the responder's own id
			copy(h[3:], id[:])
			return h
		}, ErrStreamID, PhaseHeader, Options{}},
		{"header too short", func(p *rawPeer) []byte { return cat(appendU24(nil, 55), p.hdr[3:58]) }, ErrHeader, PhaseHeader, Options{}},
		{"header too long", func(p *rawPeer) []byte { return cat(appendU24(nil, 57), p.hdr[3:], []byte{0}) }, ErrHeader, PhaseHeader, Options{}},
		{"data frame before header", func(p *rawPeer) []byte { return p.frame([]byte("hello")) }, ErrHeader, PhaseHeader, Options{}},
		{"length above MaxFrameSize", func(p *rawPeer) []byte { return cat(p.hdr, []byte{0xff, 0xff, 0xff}) }, ErrFrameTooLarge, PhaseData, Options{MaxFrameSize: 1 << 20}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, resp := newRawPeer(t)
			_, err := readErr(t, resp, c.opts, c.wire(p), true)
			var pe *ProtocolError
			if !errors.Is(err, c.want) || !errors.As(err, &pe) || pe.Phase != c.phase {
				t.Fatalf("got %v, want %v in phase %v", err, c.want, c.phase)
			}
			t.Log(err)
		})
	}
	t.Run("data before the error is delivered", func(t *testing.T) {
		p, resp := newRawPeer(t)
		f := p.frame([]byte("good"))
		bad := p.frame([]byte("bad"))
		bad[4] ^= 1
		got, err := readErr(t, resp, Options{}, cat(p.hdr, f, bad), true)
		if string(got) != "good" || !errors.Is(err, ErrDecrypt) {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("clean EOF", func(t *testing.T) {
		p, resp := newRawPeer(t)
		got, err := readErr(t, resp, Options{}, cat(p.hdr, p.frame([]byte("bye"))), true)
		if string(got) != "bye" || err != io.EOF {
			t.Fatalf("got %q, %v", got, err)
		}
	})
}

// TestHugeLengthPrefix: a peer announces a 16 MiB − 1 frame (the protocol
// maximum, so not rejected up front) and sends only a little of it. The
// reader must not allocate for the announced size: its buffer stays at the
// initial 72 KiB.
func TestHugeLengthPrefix(t *testing.T) {
	conntest.CheckGoroutines(t)
	p, resp := newRawPeer(t)
	a, b := net.Pipe()
	defer b.Close()
	c, err := New(a, Options{Handshake: &resp})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		b.Write(p.hdr)
		b.Write([]byte{0xff, 0xff, 0xff})
		b.Write(make([]byte, 1000))
		time.Sleep(50 * time.Millisecond)
		b.Close()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 10))
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v, want ErrTruncated", err)
	}
	if n := len(c.rd.buf); n > headroom+initialReadBuf {
		t.Fatalf("read buffer grew to %d bytes for 1003 received", n)
	}

	// A real maximal frame grows the buffer only as its bytes arrive, and
	// is delivered.
	p2, resp2 := newRawPeer(t)
	msg := make([]byte, MaxWritePayload)
	rand.Read(msg)
	wire := append(bytes.Clone(p2.hdr), p2.frame(msg)...)
	got, err := readErr(t, resp2, Options{}, wire, true)
	if err != io.EOF || !bytes.Equal(got, msg) {
		t.Fatalf("maximal frame: %d bytes, %v", len(got), err)
	}
}

func TestOptionsValidation(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	r1, _ := fakeResults(t)
	if _, err := New(a, Options{IsInitiator: false, Handshake: &r1}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("role mismatch: %v", err)
	}
	if _, err := New(nil, Options{}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("nil raw: %v", err)
	}
	c, err := Server(a, Options{})
	if err != nil || c.IsInitiator() || c.Datagrams() != nil || c.RemotePublicKey() != ([32]byte{}) {
		t.Fatalf("server before handshake: %v", err)
	}
	_ = context.Background
}
