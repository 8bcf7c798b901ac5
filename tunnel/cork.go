package tunnel

import (
	"encoding/binary"
	"sync"
	"time"
)

// ackDelay bounds how long an Exposer holds the ACK of a stream it has
// accepted. A new tunnelled connection's first reply (a banner, or the
// answer to what the client sent with the stream's SYN) usually follows
// within a millisecond, once the target is connected; the ACK then leaves
// in the same secret-stream message and udx packet as that reply instead
// of costing a packet of its own on the connection's critical path (and a
// second arrival at the forwarder, which then also answers with an
// immediate udx ACK instead of a delayed one). The opener never waits for
// the ACK (go-yamux's OpenStream returns once the SYN is queued), and both
// ends start from yamux's initial window.
const ackDelay = time.Millisecond

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

// isAckOnly reports whether b is exactly one window-update frame whose
// only flag is ACK: what yamux's AcceptStream sends.
func isAckOnly(b []byte) bool {
	return len(b) == muxHeaderSize && b[0] == 0 && b[1] == muxTypeWindowUpdate &&
		binary.BigEndian.Uint16(b[2:4]) == muxFlagACK
}

// corkConn is the PeerConn under an Exposer's yamux session. It holds
// stream ACKs for up to ackDelay and sends them in front of the next
// write (see ackDelay). yamux writes from one goroutine (its send loop);
// the timer's flush is the only other writer, so mu orders the two.
type corkConn struct {
	PeerConn

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

func newCorkConn(pc PeerConn) *corkConn {
	return &corkConn{PeerConn: pc, afterFunc: func(d time.Duration, f func()) corkTimer { return time.AfterFunc(d, f) }}
}

func (c *corkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if isAckOnly(b) {
		c.held = append(c.held, b...)
		if c.timer == nil {
			c.timer = c.afterFunc(ackDelay, c.flush)
		} else if len(c.held) == len(b) {
			c.timer.Reset(ackDelay)
		}
		return len(b), nil
	}
	if len(c.held) == 0 {
		return c.PeerConn.Write(b)
	}
	c.timer.Stop()
	// One write, so that the ACKs and b share a secret-stream message.
	out := append(c.held, b...)
	c.held = c.held[:0]
	n, err := c.PeerConn.Write(out)
	n -= len(out) - len(b)
	return max(n, 0), err
}

func (c *corkConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.held) == 0 || c.err != nil {
		return
	}
	_, c.err = c.PeerConn.Write(c.held)
	c.held = c.held[:0]
}

// Close stops the timer; ACKs still held are dropped with the session.
func (c *corkConn) Close() error {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.held = nil
	c.mu.Unlock()
	return c.PeerConn.Close()
}
