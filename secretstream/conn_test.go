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
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/secretstream/noise"
)

// fakeResults returns a matching pair of handshake results with random
// keys, standing in for a real IK handshake (hyperdht mode).
func fakeResults(t testing.TB) (ini, res noise.Result) {
	t.Helper()
	rand.Read(ini.Tx[:])
	rand.Read(ini.Rx[:])
	rand.Read(ini.Hash[:])
	rand.Read(ini.PublicKey[:])
	rand.Read(ini.RemotePublicKey[:])
	ini.IsInitiator = true
	res = noise.Result{Tx: ini.Rx, Rx: ini.Tx, Hash: ini.Hash, PublicKey: ini.RemotePublicKey, RemotePublicKey: ini.PublicKey}
	return
}

// wrap makes a connected pair over raw1/raw2 in hyperdht mode and runs
// both handshakes, bounded in time.
func wrap(t testing.TB, raw1, raw2 RawConn, o1, o2 Options) (*Conn, *Conn) {
	t.Helper()
	r1, r2 := fakeResults(t)
	o1.IsInitiator, o1.Handshake = true, &r1
	o2.IsInitiator, o2.Handshake = false, &r2
	c1, err := New(raw1, o1)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := New(raw2, o2)
	if err != nil {
		t.Fatal(err)
	}
	handshakeBoth(t, c1, c2)
	return c1, c2
}

func handshakeBoth(t testing.TB, c1, c2 *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c2.Handshake(ctx) }()
	if err := c1.Handshake(ctx); err != nil {
		t.Fatalf("handshake 1: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("handshake 2: %v", err)
	}
}

func TestConformancePipe(t *testing.T) {
	conntest.CheckGoroutines(t)
	conntest.Run(t, func(t testing.TB) (net.Conn, net.Conn, func()) {
		a, b := net.Pipe()
		c1, c2 := wrap(t, a, b, Options{}, Options{})
		return c1, c2, func() { c1.Close(); c2.Close() }
	})
}

func TestConformanceTCP(t *testing.T) {
	conntest.CheckGoroutines(t)
	conntest.Run(t, func(t testing.TB) (net.Conn, net.Conn, func()) {
		a, b := conntest.TCPPair(t)
		c1, c2 := wrap(t, a, b, Options{KeepAlive: 20 * time.Millisecond}, Options{})
		return c1, c2, func() { c1.Close(); c2.Close() }
	})
}

// TestKeepAlive checks the wire form of a keepalive (a 20-byte frame after
// the 59-byte header) and that the receiver drops it.
func TestKeepAlive(t *testing.T) {
	conntest.CheckGoroutines(t)
	a, b := net.Pipe()
	r1, r2 := fakeResults(t)
	c, err := New(a, Options{IsInitiator: true, Handshake: &r1, KeepAlive: 30 * time.Millisecond})
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
	if !bytes.Equal(hdr[:3], []byte{56, 0, 0}) {
		t.Fatalf("header frame prefix % x", hdr[:3])
	}
	id := StreamID(&r1.Hash, true)
	if !bytes.Equal(hdr[3:35], id[:]) {
		t.Fatal("header carries the wrong stream id")
	}
	var p xstream
	p.init(&r2.Rx, (*[HeaderSize]byte)(hdr[35:]))
	for i := 0; i < 2; i++ {
		f := make([]byte, 20)
		if _, err := io.ReadFull(b, f); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f[:3], []byte{17, 0, 0}) {
			t.Fatalf("keepalive prefix % x", f[:3])
		}
		if m, _, err := p.pull(nil, f[3:]); err != nil || len(m) != 0 {
			t.Fatalf("keepalive: %q %v", m, err)
		}
	}
	c.Close()

	// Receiver side: keepalives between data never reach Read.
	x, y := net.Pipe()
	c1, c2 := wrap(t, x, y, Options{KeepAlive: 5 * time.Millisecond}, Options{})
	defer c1.Close()
	defer c2.Close()
	go func() {
		time.Sleep(100 * time.Millisecond)
		c1.Write([]byte("after idle"))
		c1.Close()
	}()
	got, err := io.ReadAll(c2)
	if err != nil || string(got) != "after idle" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// TestCloseDuringHandshake: Close while the handshake sits in a raw Read.
func TestCloseDuringHandshake(t *testing.T) {
	conntest.CheckGoroutines(t)
	a, b := net.Pipe()
	defer b.Close()
	c, err := New(a, Options{IsInitiator: false}) // XX responder: waits for msg1
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Handshake(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrHandshake) {
			t.Fatalf("got %v, want ErrHandshake wrapping net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handshake still running after Close")
	}
	c.Close() // idempotent
}

func TestHandshakeContext(t *testing.T) {
	conntest.CheckGoroutines(t)
	a, b := net.Pipe()
	defer b.Close()
	c, err := New(a, Options{IsInitiator: false})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = c.Handshake(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrHandshake) {
		t.Fatalf("got %v, want ErrHandshake wrapping the context's error", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrHandshake) {
		t.Fatalf("Write after a failed handshake: %v", err)
	}
	c.Close()
}

func TestWriteSplitsLargeWrites(t *testing.T) {
	conntest.CheckGoroutines(t)
	a, b := net.Pipe()
	c1, c2 := wrap(t, a, b, Options{WriteFrameSize: 1000}, Options{MaxFrameSize: 1100})
	defer c1.Close()
	defer c2.Close()
	msg := make([]byte, 10000)
	rand.Read(msg)
	go func() { c1.Write(msg); c1.Close() }()
	got, err := io.ReadAll(c2)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	if c1.writeFrame != 992 {
		t.Fatalf("frame size %d, want 992 (rounded to 16)", c1.writeFrame)
	}
}

func TestConnZeroAlloc(t *testing.T) {
	a, b := net.Pipe()
	c1, c2 := wrap(t, a, b, Options{}, Options{})
	defer c1.Close()
	defer c2.Close()
	msg := make([]byte, 16<<10)
	buf := make([]byte, 32<<10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := c2.Read(buf); err != nil {
				return
			}
		}
	}()
	c1.Write(msg) // warm up buffers
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c1.Write(msg); err != nil {
			t.Fatal(err)
		}
	})
	c1.Close()
	<-done
	// net.Pipe itself does not allocate per Write; any allocation is ours.
	if allocs != 0 {
		t.Errorf("%v allocations per Write, want 0", allocs)
	}
}

// TestXXGoToGo: the stream's own XX handshake between two Go Conns, over
// TCP and net.Pipe, then the conformance suite on the result.
func TestXXGoToGo(t *testing.T) {
	conntest.CheckGoroutines(t)
	pair := func(t testing.TB, a, b net.Conn) (*Conn, *Conn) {
		k1, _ := key.Generate(nil)
		k2, _ := key.Generate(nil)
		c1, err := Client(a, Options{KeyPair: k1})
		if err != nil {
			t.Fatal(err)
		}
		c2, err := Server(b, Options{KeyPair: k2})
		if err != nil {
			t.Fatal(err)
		}
		handshakeBoth(t, c1, c2)
		if c1.RemotePublicKey() != k2.Public || c2.RemotePublicKey() != k1.Public ||
			c1.HandshakeHash() != c2.HandshakeHash() || c1.HandshakeHash() == ([HashSize]byte{}) {
			t.Fatal("XX results do not match")
		}
		return c1, c2
	}
	t.Run("TCP", func(t *testing.T) {
		conntest.Run(t, func(t testing.TB) (net.Conn, net.Conn, func()) {
			a, b := conntest.TCPPair(t)
			c1, c2 := pair(t, a, b)
			return c1, c2, func() { c1.Close(); c2.Close() }
		})
	})
	t.Run("Pipe", func(t *testing.T) {
		a, b := net.Pipe()
		c1, c2 := pair(t, a, b)
		defer c1.Close()
		defer c2.Close()
		go func() { c1.Write([]byte("hello over XX")); c1.Close() }()
		got, err := io.ReadAll(c2)
		if err != nil || string(got) != "hello over XX" {
			t.Fatalf("%q %v", got, err)
		}
	})
}

// TestLastReceive: the peer's keepalives count as hearing from it, though
// Read returns none of them; a side that has read no frame yet reports
// the zero time.
func TestLastReceive(t *testing.T) {
	conntest.CheckGoroutines(t)
	x, y := net.Pipe()
	c1, c2 := wrap(t, x, y, Options{KeepAlive: 5 * time.Millisecond}, Options{})
	defer c1.Close()
	defer c2.Close()
	if !c2.LastReceive().IsZero() {
		t.Fatalf("LastReceive before any frame: %v", c2.LastReceive())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, c2)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for c2.LastReceive().IsZero() || time.Since(c2.LastReceive()) > 50*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("keepalives every 5 ms, yet LastReceive is %v", c2.LastReceive())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !c1.LastReceive().IsZero() {
		t.Fatalf("c1 read nothing, yet LastReceive is %v", c1.LastReceive())
	}
	c1.Close()
	<-done
}
