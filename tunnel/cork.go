package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// startDelay bounds how long a corkConn holds the frames that start a
// stream: the opener's SYN and the acceptor's ACK. Each is a frame of its
// own, written the moment yamux opens or accepts the stream, and what the
// stream is for follows within a millisecond: the client's first bytes
// (the local connection was accepted as its client sent them), or the
// exposing side's first reply once its target is connected. Held, the
// frame leaves in the same secret-stream message and udx packet as those
// bytes instead of a packet of its own ahead of them on the connection's
// critical path. That packet costs more than its bytes: a link with jitter
// delivers in order, so a message that follows another by a fraction of a
// millisecond arrives with the later of two delays (on mobile's ±10 ms,
// 3.3 ms later on average each way), and its arrival draws an immediate
// udx ACK. A stream whose server speaks first (its client sends nothing
// until then) waits startDelay once. The opener never waits for the ACK
// (go-yamux's OpenStream returns once the SYN is queued), and both ends
// start from yamux's initial window.
const startDelay = time.Millisecond

// A yamux frame header (the yamux spec, go-yamux's spec.md), 12 bytes, big-endian:
//
//	0  version (0)
//	1  type: 0 data, 1 window update, 2 ping, 3 go away
//	2  flags (2 bytes): 1 SYN, 2 ACK, 4 FIN, 8 RST
//	4  stream ID (4 bytes)
//	8  length (4 bytes): data length, or window delta for a window update
const (
	muxHeaderSize       = 12
	muxTypeData         = 0
	muxTypeWindowUpdate = 1
	muxFlagACK          = 2
)

// controlFrames reports whether b is whole window-update frames without
// RST (which a corkConn may hold), and whether one of them starts a
// stream (flags exactly SYN or exactly ACK: what go-yamux's OpenStream
// and AcceptStream send). Only a start begins a hold; once one is held,
// the FINs and window updates of other streams that laneConn's writer
// hands over join it rather than pushing it out in a packet of their own
// (a connection that closes as the next one opens is common). A FIN alone
// is never held: nothing need follow it, and its peer may wait for the
// EOF.
func controlFrames(b []byte) (control, starts bool) {
	if len(b) == 0 || len(b)%muxHeaderSize != 0 {
		return false, false
	}
	for ; len(b) > 0; b = b[muxHeaderSize:] {
		if b[0] != 0 || b[1] != muxTypeWindowUpdate {
			return false, false
		}
		switch f := binary.BigEndian.Uint16(b[2:4]); {
		case f == muxFlagSYN || f == muxFlagACK:
			starts = true
		case f&(muxFlagSYN|muxFlagACK|muxFlagRST) != 0:
			return false, false
		}
	}
	return true, starts
}

// corkConn is a lane of a mux session (the connection under yamux, or
// the interactive lane beside it), on either side. It holds the frames
// that start streams for up to startDelay and sends them in front of the
// next write (see startDelay). A laneConn writes each lane from one
// goroutine; the timer's flush is the only other writer, so mu orders
// the two.
type corkConn struct {
	net.Conn

	// afterFunc is time.AfterFunc; tests replace it to fire the timer
	// themselves instead of racing the clock.
	afterFunc func(time.Duration, func()) corkTimer

	mu    sync.Mutex
	held  []byte
	timer corkTimer
	err   error // of a flush by the timer, returned by the next Write
}

// corkTimer is the part of *time.Timer corkConn uses.
type corkTimer interface {
	Stop() bool
	Reset(time.Duration) bool
}

func newCorkConn(c net.Conn) *corkConn {
	return &corkConn{Conn: c, afterFunc: func(d time.Duration, f func()) corkTimer { return time.AfterFunc(d, f) }}
}

func (c *corkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if control, starts := controlFrames(b); control && (starts || len(c.held) > 0) {
		c.held = append(c.held, b...)
		if c.timer == nil {
			c.timer = c.afterFunc(startDelay, c.flush)
		} else if len(c.held) == len(b) {
			c.timer.Reset(startDelay)
		}
		return len(b), nil
	}
	if len(c.held) == 0 {
		return c.Conn.Write(b)
	}
	c.timer.Stop()
	// One write, so that the held frames and b share a secret-stream
	// message.
	out := append(c.held, b...)
	c.held = c.held[:0]
	n, err := c.Conn.Write(out)
	n -= len(out) - len(b)
	return max(n, 0), err
}

func (c *corkConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.held) == 0 || c.err != nil {
		return
	}
	_, c.err = c.Conn.Write(c.held)
	c.held = c.held[:0]
}

// Close stops the timer and sends what is still held first: a SYN held
// as the session closes is moot, but a FIN beside it is a stream's
// orderly end. laneConn.Close has set the write deadline that bounds it.
func (c *corkConn) Close() error {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	if len(c.held) > 0 && c.err == nil {
		_, _ = c.Conn.Write(c.held)
	}
	c.held = nil
	c.err = net.ErrClosed
	c.mu.Unlock()
	return c.Conn.Close()
}
