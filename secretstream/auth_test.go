package secretstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// scriptedRaw is a raw connection that reads wire in pieces of the sizes
// given (cycling; each at most what Read asks for) and records the
// Authenticated calls a Conn makes on it.
type scriptedRaw struct {
	wire  []byte
	sizes []int
	i     int
	auth  []int64
}

func (r *scriptedRaw) Read(p []byte) (int, error) {
	if len(r.wire) == 0 {
		return 0, io.EOF
	}
	n := min(r.sizes[r.i%len(r.sizes)], len(p), len(r.wire))
	r.i++
	copy(p, r.wire[:n])
	r.wire = r.wire[n:]
	return n, nil
}

func (r *scriptedRaw) Write(p []byte) (int, error) { return len(p), nil }
func (r *scriptedRaw) Close() error                { return nil }
func (r *scriptedRaw) Authenticated(n int64)       { r.auth = append(r.auth, n) }

// The offset a Conn reports authenticated (to a raw connection that
// asks, as a udx stream does) is the raw stream offset of the end of
// the last message whose MAC verified: never a byte beyond it that the
// frame reader holds already (read-ahead), and exactly its end however
// the message was split across raw reads. A tampered message reports
// nothing.
func TestAuthenticatedOffset(t *testing.T) {
	peer, resp := newRawPeer(t)
	msgs := [][]byte{{}, []byte("a"), bytes.Repeat([]byte("b"), 5000), {}, bytes.Repeat([]byte("c"), 100000), bytes.Repeat([]byte("d"), 16)}
	wire := slices.Clone(peer.hdr)
	var ends []int64 // of every message's frame, keepalives included
	for _, m := range msgs {
		wire = append(wire, peer.frame(m)...)
		ends = append(ends, int64(len(wire)))
	}
	bad := peer.frame([]byte("forged"))
	bad[len(bad)-1] ^= 1
	wire = append(wire, bad...)
	for _, sizes := range [][]int{
		{1},               // every message spans many reads
		{7, 1, 3000},      // and some reads hold parts of two
		{1 << 20},         // one read holds everything: read-ahead
		{59 + 20 + 3, 64}, // the header, a keepalive and a prefix; then small pieces
	} {
		t.Run(fmt.Sprint(sizes), func(t *testing.T) {
			raw := &scriptedRaw{wire: slices.Clone(wire), sizes: sizes}
			c, err := New(raw, Options{Handshake: &resp})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			frame := 0 // frames read
			for _, m := range msgs {
				if len(m) == 0 {
					frame++ // ReadMessage skips it
					continue
				}
				got, err := c.ReadMessage(nil)
				if err != nil {
					t.Fatalf("message %d: %v", frame, err)
				}
				if !bytes.Equal(got, m) {
					t.Fatalf("message %d: %d bytes, not what was sent", frame, len(got))
				}
				if want := ends[:frame+1]; !slices.Equal(raw.auth, want) {
					t.Fatalf("after message %d: authenticated %v, want %v", frame, raw.auth, want)
				}
				frame++
			}
			if _, err := c.ReadMessage(nil); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("the forged message: %v, want %v", err, ErrDecrypt)
			}
			if !slices.Equal(raw.auth, ends) {
				t.Fatalf("after the forged message: authenticated %v, want %v", raw.auth, ends)
			}
		})
	}
}

// stallRaw is one end of a pipe whose receive can be made to stall
// (OnReceiveStall) by the test.
type stallRaw struct {
	net.Conn
	mu   sync.Mutex
	hook func()
}

func (s *stallRaw) OnReceiveStall(f func()) {
	s.mu.Lock()
	s.hook = f
	s.mu.Unlock()
}

func (s *stallRaw) stall() {
	s.mu.Lock()
	f := s.hook
	s.mu.Unlock()
	if f != nil {
		f()
	}
}

// A raw connection's receive-stall hook makes the Conn send a keepalive
// at once, long before its KeepAlive interval; the hook only wakes the
// keepalive goroutine (it runs on udx's loop, which must not block), and
// Close stops that goroutine. Without KeepAlive no hook is registered.
func TestStallSendsKeepAlive(t *testing.T) {
	conntest.CheckGoroutines(t)
	a, b := net.Pipe()
	defer b.Close()
	raw := &stallRaw{Conn: a}
	r1, r2 := fakeResults(t)
	c, err := New(raw, Options{IsInitiator: true, Handshake: &r1, KeepAlive: time.Hour, SendHeader: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Handshake(context.Background())
	b.SetDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 59)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	var p xstream
	p.init(&r2.Rx, (*[HeaderSize]byte)(hdr[35:]))
	// The hook is registered once the handshake is done, just after
	// the header went out.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		raw.mu.Lock()
		ok := raw.hook != nil
		raw.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(end) {
			t.Fatal("no stall hook registered")
		}
	}
	for i := range 3 {
		start := time.Now()
		raw.stall() // returns at once: nobody reads the pipe yet
		f := make([]byte, 20)
		if _, err := io.ReadFull(b, f); err != nil {
			t.Fatalf("stall %d: no keepalive: %v", i, err)
		}
		if m, _, err := p.pull(nil, f[3:]); err != nil || len(m) != 0 {
			t.Fatalf("stall %d: keepalive %q %v", i, m, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("stall %d: keepalive after %v", i, d)
		}
	}
	c.Close()

	x, y := net.Pipe()
	defer y.Close()
	raw = &stallRaw{Conn: x}
	c, err = New(raw, Options{IsInitiator: true, Handshake: &r1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Handshake(context.Background()); err != nil {
		t.Fatal(err)
	}
	if raw.hook != nil {
		t.Fatal("a Conn without KeepAlive registered a stall hook")
	}
}
