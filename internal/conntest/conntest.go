// Package conntest is a conformance suite for net.Conn implementations
// layered over byte streams (secretstream over TCP or net.Pipe, later UDX
// streams). Run calls golang.org/x/net/nettest.TestConn, which covers basic
// I/O, ping-pong, racy buffer reuse, read/write/past/present/future
// deadlines, Close unblocking pending calls and concurrent method calls,
// and adds what nettest does not check: a concurrent bidirectional transfer
// compared by hash, CloseWrite/EOF half-close semantics, use after Close,
// idempotent Close, and recovery after a read deadline.
//
// It also has a goroutine-leak check (CheckGoroutines) for tests of types
// that own goroutines.
package conntest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// MakePipe returns two connected endpoints: what c1 writes c2 reads and
// the reverse. stop releases everything (both conns, listeners) and must
// tolerate conns the test already closed.
type MakePipe func(t testing.TB) (c1, c2 net.Conn, stop func())

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, mp MakePipe) {
	t.Run("nettest", func(t *testing.T) {
		nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) {
			c1, c2, stop := mp(t)
			return c1, c2, stop, nil
		})
	})
	t.Run("Bidirectional", func(t *testing.T) { withPipe(t, mp, testBidirectional) })
	t.Run("CloseWrite", func(t *testing.T) { withPipe(t, mp, testCloseWrite) })
	t.Run("CloseUnblocks", func(t *testing.T) { withPipe(t, mp, testCloseUnblocks) })
	t.Run("UseAfterClose", func(t *testing.T) { withPipe(t, mp, testUseAfterClose) })
	t.Run("ReadDeadlineRecovers", func(t *testing.T) { withPipe(t, mp, testReadDeadlineRecovers) })
}

// limit bounds every subtest: a hang becomes a failure, not a stuck run.
const limit = time.Minute

func withPipe(t *testing.T, mp MakePipe, f func(t *testing.T, c1, c2 net.Conn)) {
	c1, c2, stop := mp(t)
	var once sync.Once
	defer once.Do(stop)
	timer := time.AfterFunc(limit, func() {
		once.Do(func() {
			t.Error("test timed out; stopping the pipe")
			stop()
		})
	})
	defer timer.Stop()
	f(t, c1, c2)
}

// TransferSize is what each direction carries in the Bidirectional test.
var TransferSize = 8 << 20

// Transfer writes n pseudo-random bytes (seeded) in random-sized writes of
// up to maxWrite bytes and returns their SHA-256.
func Transfer(w io.Writer, n int, seed uint64, maxWrite int) ([32]byte, error) {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	src := rand.NewChaCha8(s)
	sizes := rand.New(rand.NewPCG(seed, 1))
	h := sha256.New()
	buf := make([]byte, maxWrite)
	for n > 0 {
		k := min(n, 1+sizes.IntN(maxWrite))
		src.Read(buf[:k])
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return [32]byte{}, err
		}
		n -= k
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// Drain reads r to EOF and returns the byte count and SHA-256.
func Drain(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, struct{ io.Reader }{r}, make([]byte, 32<<10))
	var sum [32]byte
	h.Sum(sum[:0])
	return n, sum, err
}

type closeWriter interface{ CloseWrite() error }

// halfClose ends c's write side: CloseWrite when supported, else Close.
func halfClose(c net.Conn) (half bool, err error) {
	if cw, ok := c.(closeWriter); ok {
		err := cw.CloseWrite()
		if !errors.Is(err, errors.ErrUnsupported) {
			return true, err
		}
	}
	return false, nil
}

func testBidirectional(t *testing.T, c1, c2 net.Conn) {
	n := TransferSize
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	sent := make(chan result, 2)
	got := make(chan result, 2)
	for i, c := range []net.Conn{c1, c2} {
		go func() {
			sum, err := Transfer(c, n, uint64(i+1), 100<<10)
			sent <- result{sum: sum, err: err}
		}()
		go func() {
			k, sum, err := Drain(io.LimitReader(c, int64(n)))
			got <- result{sum: sum, n: k, err: err}
		}()
	}
	var s, g []result
	for range 2 {
		s = append(s, <-sent)
		g = append(g, <-got)
	}
	for _, r := range append(s, g...) {
		if r.err != nil {
			t.Fatalf("transfer error: %v", r.err)
		}
	}
	for _, r := range g {
		if r.n != int64(n) || (r.sum != s[0].sum && r.sum != s[1].sum) {
			t.Fatalf("received %d bytes with a hash that matches neither sender", r.n)
		}
	}
	if g[0].sum == g[1].sum {
		t.Fatal("both directions delivered the same stream")
	}
}

func testCloseWrite(t *testing.T, c1, c2 net.Conn) {
	if _, ok := c1.(closeWriter); !ok {
		t.Skip("no CloseWrite method")
	}
	errc := make(chan error, 1)
	go func() {
		if _, err := c1.Write([]byte("request")); err != nil {
			errc <- err
			return
		}
		half, err := halfClose(c1)
		if !half {
			err = errors.ErrUnsupported
		}
		errc <- err
	}()
	type readResult struct {
		b   []byte
		err error
	}
	rc := make(chan readResult, 1)
	go func() {
		b, err := io.ReadAll(c2) // must end with EOF after CloseWrite
		rc <- readResult{b, err}
	}()
	if e := <-errc; errors.Is(e, errors.ErrUnsupported) {
		t.Skip("CloseWrite unsupported by this transport")
	} else if e != nil {
		t.Fatalf("write/CloseWrite: %v", e)
	}
	r := <-rc
	req, err := r.b, r.err
	if err != nil {
		t.Fatalf("reading until EOF: %v", err)
	}
	if string(req) != "request" {
		t.Fatalf("got %q", req)
	}
	if n, err := c2.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("second read after EOF: %d, %v; want 0, EOF", n, err)
	}
	// The other direction still works.
	if _, err := c2.Write([]byte("response")); err != nil {
		t.Fatalf("writing after the peer's CloseWrite: %v", err)
	}
	if _, err := halfClose(c2); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	resp, err := io.ReadAll(c1)
	if err != nil || string(resp) != "response" {
		t.Fatalf("reading response: %q, %v", resp, err)
	}
	if _, err := c1.Write([]byte("x")); err == nil {
		t.Fatal("Write after CloseWrite succeeded")
	}
}

func testCloseUnblocks(t *testing.T, c1, c2 net.Conn) {
	rerr := make(chan error, 1)
	go func() {
		_, err := c1.Read(make([]byte, 10)) // c2 never writes
		rerr <- err
	}()
	werr := make(chan error, 1)
	go func() {
		// c2 never reads: this blocks once transport buffers fill.
		buf := make([]byte, 64<<10)
		for {
			if _, err := c1.Write(buf); err != nil {
				werr <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := c1.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for name, ch := range map[string]chan error{"Read": rerr, "Write": werr} {
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("%s returned nil after Close", name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still blocked 10 s after Close", name)
		}
	}
}

func testUseAfterClose(t *testing.T, c1, c2 net.Conn) {
	if err := c1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_ = c1.Close() // must not panic or hang; its result is transport-defined
	if _, err := c1.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
	if _, err := c1.Read(make([]byte, 1)); err == nil {
		t.Error("Read after Close succeeded")
	}
	// The peer sees the end (EOF or a reset-like error), promptly.
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(c2)
	if err != nil && isTimeout(err) {
		t.Errorf("peer did not see the close: %v", err)
	}
}

func testReadDeadlineRecovers(t *testing.T, c1, c2 net.Conn) {
	// A Read that times out must not lose or corrupt data that arrives
	// later, even when the timeout hits in the middle of a message.
	msg := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	go func() {
		time.Sleep(50 * time.Millisecond)
		c2.Write(msg)
	}()
	got := make([]byte, 0, len(msg))
	buf := make([]byte, 4096)
	timeouts := 0
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(msg) && time.Now().Before(deadline) {
		c1.SetReadDeadline(time.Now().Add(time.Millisecond))
		n, err := c1.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if !isTimeout(err) {
				t.Fatalf("Read: %v", err)
			}
			timeouts++
		}
	}
	c1.SetReadDeadline(time.Time{})
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, want %d identical", len(got), len(msg))
	}
	if timeouts == 0 {
		t.Log("no read timed out; the recovery path was not exercised")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// CheckGoroutines records the goroutine count and, when the test ends,
// fails it if the count has not come back down within 5 s, printing the
// stacks. Call it first in a test (cleanups run last-in first-out, so the
// check runs after the test's own cleanups).
func CheckGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, filterStacks(string(buf)))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// filterStacks drops the testing framework's own goroutines.
func filterStacks(all string) string {
	var keep []string
	for _, g := range strings.Split(all, "\n\n") {
		if strings.Contains(g, "testing.(*T).Run") || strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "keytunnel") {
			continue
		}
		keep = append(keep, g)
	}
	return strings.Join(keep, "\n\n")
}

// TCPPair returns the two ends of a loopback TCP connection, which has
// the half-close that net.Pipe lacks. The caller closes both.
func TCPPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		a.Close()
		t.Fatal(r.err)
	}
	return a, r.c
}
