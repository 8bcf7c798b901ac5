package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// scriptedConn is a conn whose reads return the scripted sizes in turn
// (then EOF) and record the buffer each was given; writes are kept.
type scriptedConn struct {
	reads   []int
	bufLens []int
	out     bytes.Buffer
	writes  []int
	closedW bool
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	c.bufLens = append(c.bufLens, len(p))
	if len(c.reads) == 0 {
		return 0, io.EOF
	}
	n := min(c.reads[0], len(p))
	c.reads = c.reads[1:]
	for i := range n {
		p[i] = byte(len(c.bufLens))
	}
	return n, nil
}

func (c *scriptedConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, len(p))
	return c.out.Write(p)
}
func (c *scriptedConn) CloseWrite() error           { c.closedW = true; return nil }
func (c *scriptedConn) Close() error                { return nil }
func (c *scriptedConn) SetDeadline(time.Time) error { return nil }

// pump moves to the bulk buffer when a read fills the small one, keeps it
// through a transfer's uneven reads, and returns it at a small read.
func TestPumpBuffers(t *testing.T) {
	src := &scriptedConn{reads: []int{1000, bufSize, bulkBufSize, 20 << 10, 100, 1000}}
	dst := &scriptedConn{}
	var n atomic.Uint64
	if err := pump(dst, src, &n); err != nil {
		t.Fatal(err)
	}
	want := []int{bufSize, bufSize, bulkBufSize, bulkBufSize, bulkBufSize, bufSize, bufSize}
	if !slices.Equal(src.bufLens, want) {
		t.Errorf("read buffers %v, want %v", src.bufLens, want)
	}
	total := 1000 + bufSize + bulkBufSize + 20<<10 + 100 + 1000
	if dst.out.Len() != total || n.Load() != uint64(total) || !dst.closedW {
		t.Errorf("copied %d bytes, counted %d, half-closed %v; want %d and a half-close", dst.out.Len(), n.Load(), dst.closedW, total)
	}
}

// What a stream of a laneConn session has already received goes to the
// target in one write, not one per yamux frame, and Buffered counts it
// exactly: a stale count would hold a pump's data back while it waits in
// Read for bytes that are not coming.
func TestPumpGathersFrames(t *testing.T) {
	conntest.CheckGoroutines(t)
	p1, p2 := net.Pipe()
	la, lb := newLaneConn(p1), newLaneConn(p2)
	cs, cg, err := newGatedMux(la, false, laneMuxConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ss, sg, err := newGatedMux(lb, true, laneMuxConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cs.Close(); ss.Close(); la.Close(); lb.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	yc, err := cs.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := cg.stream(yc)
	const frames = bufSize / muxFrameBody // as many as pump's first buffer holds
	data := make([]byte, frames*muxFrameBody)
	rand.Read(data)
	go c.Write(data)
	ys, err := ss.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	s := sg.stream(ys)
	waitFor(t, "the frames received", func() bool { return s.Buffered() == len(data) })

	first := make([]byte, 100)
	if _, err := io.ReadFull(s, first); err != nil {
		t.Fatal(err)
	}
	if got := s.Buffered(); got != len(data)-len(first) {
		t.Fatalf("Buffered after reading %d bytes: %d, want %d", len(first), got, len(data)-len(first))
	}
	dst := &scriptedConn{}
	done := make(chan error, 1)
	go func() { done <- pump(dst, s, nil) }()
	waitFor(t, "the rest written", func() bool { return s.Buffered() == 0 })
	c.CloseWrite()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("pump did not end at the stream's end")
	}
	if !bytes.Equal(append(first, dst.out.Bytes()...), data) {
		t.Fatal("the data changed on the way")
	}
	if len(dst.writes) != 1 {
		t.Errorf("%d bytes of %d frames went to the target in writes of %v; want one write", len(data)-len(first), frames, dst.writes)
	}
}

// tcpPair is conntest.TCPPair as TCP connections, closed when the test
// ends.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	a, b := conntest.TCPPair(t)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// pump between two TCP connections (raw system calls on Linux) copies
// everything, passes the end on as a half-close, wakes at a deadline,
// and reports a write to a connection the peer reset.
func TestPumpTCP(t *testing.T) {
	conntest.CheckGoroutines(t)
	t.Run("copy", func(t *testing.T) {
		in, src := tcpPair(t)
		dst, out := tcpPair(t)
		if runtime.GOOS == "linux" && rawTCPOf(src) == nil {
			t.Fatal("no raw I/O for a *net.TCPConn on Linux")
		}
		data := make([]byte, 8<<20)
		rand.Read(data)
		go func() {
			in.Write(data)
			in.CloseWrite()
		}()
		done := make(chan error, 1)
		var n atomic.Uint64
		go func() { done <- pump(dst, src, &n) }()
		out.SetDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(out) // to the half-close
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) || n.Load() != uint64(len(data)) {
			t.Fatalf("copied %d bytes (counted %d) of %d, equal %v", len(got), n.Load(), len(data), bytes.Equal(got, data))
		}
	})
	t.Run("deadline", func(t *testing.T) {
		_, src := tcpPair(t)
		dst, _ := tcpPair(t)
		done := make(chan error, 1)
		go func() { done <- pump(dst, src, nil) }()
		time.Sleep(20 * time.Millisecond) // waiting in the poller
		src.SetDeadline(time.Now())
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("pump after a past deadline: %v, want %v", err, os.ErrDeadlineExceeded)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a past deadline did not wake pump's read")
		}
	})
	t.Run("reset", func(t *testing.T) {
		in, src := tcpPair(t)
		dst, out := tcpPair(t)
		out.SetLinger(0)
		out.Close() // dst's writes now fail
		go func() {
			chunk := make([]byte, 64<<10)
			for {
				if _, err := in.Write(chunk); err != nil {
					return
				}
			}
		}()
		done := make(chan error, 1)
		go func() { done <- pump(dst, src, nil) }()
		select {
		case err := <-done:
			var se *os.SyscallError
			if !errors.As(err, &se) || (!errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE)) {
				t.Fatalf("pump to a reset connection: %v, want ECONNRESET or EPIPE", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("pump to a reset connection did not fail")
		}
		src.Close()
	})
}
