package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-yamux/v5"
)

// admitAsync runs g.admit in a goroutine and returns its result channel.
func admitAsync(g *sendGate, n int, st *streamStop) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- g.admit(n, st) }()
	return ch
}

func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still waiting after 5 s", what)
		return nil
	}
}

func notYet(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s: admitted (err %v) while the gate is full", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSendGate(t *testing.T) {
	g := &sendGate{}
	st := newStreamStop()
	if err := g.admit(gateLimit, st); err != nil {
		t.Fatal(err)
	}
	// Full: a small write passes, large ones queue in order.
	if err := waitErr(t, admitAsync(g, smallWrite, st), "small write"); err != nil {
		t.Fatal(err)
	}
	first := admitAsync(g, bufSize, st)
	notYet(t, first, "first large write")
	second := admitAsync(g, bufSize, st)
	notYet(t, second, "second large write")

	// Below the limit again: the first waiter, and only it, goes (its
	// bytes take the queue back to the limit).
	g.release(smallWrite + bufSize)
	if err := waitErr(t, first, "first large write"); err != nil {
		t.Fatal(err)
	}
	notYet(t, second, "second large write")
	g.release(bufSize)
	if err := waitErr(t, second, "second large write"); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	q := g.queued
	g.mu.Unlock()
	if q != gateLimit {
		t.Errorf("queued %d, want %d", q, gateLimit)
	}
}

func TestSendGateStops(t *testing.T) {
	g := &sendGate{}
	if err := g.admit(gateLimit, newStreamStop()); err != nil {
		t.Fatal(err)
	}

	// A closed stream's waiting write gives up and takes nothing.
	closed := newStreamStop()
	ch := admitAsync(g, bufSize, closed)
	notYet(t, ch, "write of a stream about to close")
	closed.close()
	if err := waitErr(t, ch, "write of a closed stream"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("closed stream: %v, want net.ErrClosed", err)
	}

	// A deadline in the future ends the wait when it passes; one set in
	// the past while waiting ends it at once.
	timed := newStreamStop()
	timed.setDeadline(time.Now().Add(100 * time.Millisecond))
	start := time.Now()
	if err := waitErr(t, admitAsync(g, bufSize, timed), "write with a deadline"); !errors.Is(err, yamux.ErrTimeout) {
		t.Errorf("deadline: %v, want yamux.ErrTimeout", err)
	} else if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("deadline of 100 ms ended the wait after %v", d)
	}
	kicked := newStreamStop()
	ch = admitAsync(g, bufSize, kicked)
	notYet(t, ch, "write before its deadline")
	kicked.setDeadline(time.Now())
	if err := waitErr(t, ch, "write given a past deadline"); !errors.Is(err, yamux.ErrTimeout) {
		t.Errorf("past deadline: %v, want yamux.ErrTimeout", err)
	}

	g.mu.Lock()
	q, w := g.queued, len(g.waiters)
	g.mu.Unlock()
	if q != gateLimit || w != 0 {
		t.Errorf("after three abandoned writes: queued %d, %d waiting; want %d, 0", q, w, gateLimit)
	}

	// Closing the gate (the session ended) lets waiters through to
	// yamux, which reports the session's error.
	ch = admitAsync(g, bufSize, newStreamStop())
	notYet(t, ch, "write before the session ends")
	g.close()
	if err := waitErr(t, ch, "write when the session ends"); err != nil {
		t.Errorf("after close: %v", err)
	}
	if err := g.admit(bufSize, newStreamStop()); !errors.Is(err, errGateClosed) {
		t.Errorf("admit on a closed gate: %v", err)
	}
}

// slowConn delivers what it reads no faster than one 16 KiB chunk per
// millisecond, so that a sender's queue fills, as on a path slower than
// the sender.
type slowConn struct{ net.Conn }

func (c slowConn) Read(b []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return c.Conn.Read(b[:min(len(b), 16<<10)])
}

// ahead measures how many bytes of a bulk stream reach the peer between a
// second stream's 1-byte write and that byte's arrival: what the small
// write waited behind in the sender.
func ahead(t *testing.T, gated bool) int64 {
	t.Helper()
	a, b := net.Pipe()
	cfg := muxConfig(slog.New(slog.DiscardHandler))
	cfg.InitialStreamWindowSize = 16 << 20 // the window is not what limits here
	var cs *yamux.Session
	var g *sendGate
	var err error
	if gated {
		cs, g, err = newGatedMux(a, false, cfg, nil)
	} else {
		cs, err = yamux.Client(a, cfg, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	ss, err := yamux.Server(slowConn{b}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()

	bulk, err := cs.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var received atomic.Int64
	go func() {
		st, err := ss.AcceptStream()
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := st.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		w := io.Writer(bulk)
		if gated {
			w = g.stream(bulk)
		}
		buf := make([]byte, bufSize)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}()
	// Let the bulk stream fill whatever queue there is.
	deadline := time.Now().Add(5 * time.Second)
	for received.Load() < 2<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("bulk stream: %d bytes in 5 s", received.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}

	small, err := cs.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int64, 1)
	go func() {
		st, err := ss.AcceptStream()
		if err != nil {
			return
		}
		var one [1]byte
		if _, err := io.ReadFull(st, one[:]); err == nil {
			got <- received.Load()
		}
	}()
	before := received.Load()
	var w io.Writer = small
	if gated {
		w = g.stream(small)
	}
	if _, err := w.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	select {
	case after := <-got:
		return after - before
	case <-time.After(10 * time.Second):
		t.Fatal("the small write did not arrive in 10 s")
		return 0
	}
}

// TestGateSmallWriteNotBehindBulk: with the gate, a small write of one
// stream waits behind at most gateLimit and a copy buffer of a bulk
// stream's data (plus what the pipe and the receiver's read hold), not
// behind yamux's 64-frame queue of it.
func TestGateSmallWriteNotBehindBulk(t *testing.T) {
	const slack = 2 * (16 << 10) // a frame in the pipe, one in the reader
	limit := int64(gateLimit + bufSize + slack)
	gated := ahead(t, true)
	ungated := ahead(t, false)
	t.Logf("bulk bytes delivered ahead of a 1-byte write: %d gated, %d without the gate", gated, ungated)
	if gated > limit {
		t.Errorf("gated: %d bytes ahead of the small write, want at most %d", gated, limit)
	}
	// Without the gate the same measure shows yamux's queue; if it did
	// not, this test could not tell the gate from no gate.
	if ungated <= limit {
		t.Errorf("ungated: only %d bytes ahead; the test no longer shows the queue the gate removes", ungated)
	}
}

// TestGateWindowBlockedStreamDoesNotStall: a stream whose reader has
// stopped (its window spent) must not keep the gate's credit while it
// waits for window, or every other stream's large writes wait with it:
// a paused download would stall the whole tunnel.
func TestGateWindowBlockedStreamDoesNotStall(t *testing.T) {
	a, b := net.Pipe()
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	cs, g, err := newGatedMux(a, false, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	ss, err := yamux.Server(b, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	accepted := make(chan *yamux.Stream, 2)
	go func() {
		for {
			st, err := ss.AcceptStream()
			if err != nil {
				return
			}
			accepted <- st
		}
	}()
	// Two stalled streams: their peers never read.
	for range 2 {
		st, err := cs.OpenStream(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ms := g.stream(st)
		go ms.Write(make([]byte, 1<<20)) // ends when the session closes
		<-accepted
	}
	time.Sleep(100 * time.Millisecond) // both spend their windows and block
	st, err := cs.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	done := make(chan error, 1)
	go func() {
		_, err := g.stream(st).Write(make([]byte, size))
		done <- err
	}()
	peer := <-accepted
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.CopyN(io.Discard, peer, size)
	if err != nil {
		g.mu.Lock()
		state := fmt.Sprintf("queued %d, %d waiting", g.queued, len(g.waiters))
		for id, w := range g.win {
			state += fmt.Sprintf("; stream %d window %d", id, w.avail)
		}
		g.mu.Unlock()
		t.Fatalf("third stream: %d of %d bytes: %v (gate: %s)", n, size, err, state)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("third stream's write still blocked")
	}
}
