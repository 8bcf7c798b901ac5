package tunnel

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-yamux/v5"
)

// A yamux session sends its frames in the order its streams wrote them:
// go-yamux queues up to 64 frames (1 MiB at our 16 KiB frames) in one
// FIFO in front of the connection, and the connection (secret-stream over
// one udx stream) takes them only as fast as the path does. A bulk
// transfer keeps that queue full, so a keystroke or a small request of
// another tunnelled connection waits behind up to 1 MiB: 84 ms at 100
// Mbit/s, 420 ms at 20 Mbit/s, on every round trip (the WAN benchmark
// measured a second connection's echo at 1.8-6 RTT beside a download).
//
// sendGate keeps that FIFO short instead. It counts the data bytes
// streams have handed to yamux that its send loop has not yet written to
// the connection, and a large write waits while they are gateLimit or more;
// a small write (at most smallWrite bytes) never waits. Two frames are
// enough to keep yamux's send loop busy (the udx stream below queues a few
// milliseconds of its own); each 16 KiB more is 6.5 ms in front of a small
// write at 20 Mbit/s. What a small write
// finds ahead of it is then at most gateLimit plus one copy buffer, and the
// udx send queue (bounded to a few milliseconds of the path's rate) does
// the rest of the buffering a bulk stream needs to keep the path busy.
// Large writes that wait are admitted in arrival order, so several bulk
// streams share the session in turn.
//
// The gate is only a scheduler: yamux's flow control stays what bounds
// each stream's bytes in flight, and a session whose connection stops
// taking data still blocks everyone, as before.
const (
	gateLimit  = 32 << 10
	smallWrite = 4 << 10
)

type sendGate struct {
	// lanes: the session runs on a laneConn (see received). Set before
	// the session starts.
	lanes bool

	mu      sync.Mutex
	queued  int // data bytes admitted and not yet written to the connection
	waiters []*gateWaiter
	closed  bool

	// Send windows (gatewin.go).
	win     map[uint32]*sendWindow
	winKick chan struct{} // closed and cleared when a window opens or ends
	rx      frameWatcher  // yamux's receive loop's only
}

type gateWaiter struct {
	n       int
	granted chan struct{}
}

// errGateClosed is what a write waiting at the gate gets when the session
// ends; yamux's own write then reports the session's error.
var errGateClosed = errors.New("tunnel: session closed")

// errKicked makes streamStop.wait look at its stream again.
var errKicked = errors.New("kicked")

// admit returns once n bytes may go to yamux, or with an error when the
// stream is closed or reset, its write deadline passes, or the session
// ends.
func (g *sendGate) admit(n int, st *streamStop) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return errGateClosed
	}
	if n <= smallWrite || (g.queued < gateLimit && len(g.waiters) == 0) {
		g.queued += n
		g.mu.Unlock()
		return nil
	}
	w := &gateWaiter{n: n, granted: make(chan struct{})}
	g.waiters = append(g.waiters, w)
	g.mu.Unlock()

	err := st.wait(w.granted)
	if err == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, x := range g.waiters {
		if x == w {
			g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
			return err
		}
	}
	// Granted meanwhile, or the gate closed: give the bytes back.
	if !g.closed {
		g.releaseLocked(n)
	}
	return err
}

// release takes n admitted bytes off the queue: yamux's send loop wrote
// them, or the write that was admitted for them did not hand them over.
func (g *sendGate) release(n int) {
	g.mu.Lock()
	g.releaseLocked(n)
	g.mu.Unlock()
}

func (g *sendGate) releaseLocked(n int) {
	// Frames the gate did not admit (a stream header written past it)
	// must not leave credit behind.
	g.queued = max(g.queued-n, 0)
	for len(g.waiters) > 0 && g.queued < gateLimit {
		w := g.waiters[0]
		g.waiters = g.waiters[1:]
		g.queued += w.n
		close(w.granted)
	}
}

func (g *sendGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	g.kickWindowsLocked()
	for _, w := range g.waiters {
		close(w.granted)
	}
	g.waiters = nil
}

// gateConn is the connection under a gated yamux session: what yamux's
// send loop writes there leaves the gate's queue. yamux writes one frame
// per call (a 12-byte header and, for a data frame, its body).
type gateConn struct {
	net.Conn
	gate *sendGate
	// lanes: the connection is a laneConn, whose writers release the
	// credit when they hand the data on (laneConn.onSent).
	lanes bool
}

func (c gateConn) Write(b []byte) (int, error) {
	c.gate.watchOut(b)
	n, err := c.Conn.Write(b)
	if len(b) > muxHeaderSize && b[1] == muxTypeData && !c.lanes {
		c.gate.release(len(b) - muxHeaderSize)
	}
	return n, err
}

func (c gateConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.gate.watchIn(p[:n])
	return n, err
}

func (c gateConn) Close() error {
	c.gate.close()
	return c.Conn.Close()
}

// newGatedMux starts a yamux session on c whose streams (through
// gate.stream) share it through a sendGate.
func newGatedMux(c net.Conn, server bool, cfg *yamux.Config, mm func() (yamux.MemoryManager, error)) (*yamux.Session, *sendGate, error) {
	g := &sendGate{}
	gc := gateConn{Conn: c, gate: g}
	if lc, ok := c.(*laneConn); ok {
		lc.onSent = g.release
		gc.lanes, g.lanes = true, true
	}
	var s *yamux.Session
	var err error
	if server {
		s, err = yamux.Server(gc, cfg, mm)
	} else {
		s, err = yamux.Client(gc, cfg, mm)
	}
	if err != nil {
		return nil, nil, err
	}
	return s, g, nil
}

// stream wraps a stream of g's session (g may be nil: an ungated stream).
func (g *sendGate) stream(st *yamux.Stream) muxStream {
	if g != nil {
		g.track(st.StreamID())
	}
	return muxStream{Stream: st, gate: g, stop: newStreamStop()}
}

// streamStop wakes a write waiting at the gate when its stream is closed,
// reset or given a past deadline, as those wake a write blocked in yamux.
type streamStop struct {
	mu       sync.Mutex
	kick     chan struct{} // closed and replaced on every change
	closed   bool
	deadline time.Time
}

func newStreamStop() *streamStop { return &streamStop{kick: make(chan struct{})} }

func (s *streamStop) change(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
	close(s.kick)
	s.kick = make(chan struct{})
}

func (s *streamStop) close() { s.change(func() { s.closed = true }) }

func (s *streamStop) setDeadline(t time.Time) { s.change(func() { s.deadline = t }) }

// wait returns nil once granted is closed, or an error once the stream is
// closed or its deadline has passed.
func (s *streamStop) wait(granted <-chan struct{}) error {
	for {
		s.mu.Lock()
		kick, closed, dl := s.kick, s.closed, s.deadline
		s.mu.Unlock()
		if closed {
			return net.ErrClosed
		}
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return yamux.ErrTimeout
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		var err error
		select {
		case <-granted:
		case <-kick:
			err = errKicked
		case <-timeout:
			err = yamux.ErrTimeout
		}
		if t != nil {
			t.Stop()
		}
		if err != errKicked {
			return err
		}
	}
}
