package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// recConn records each Write as one message, as secret-stream does.
type recConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(b))
	c.mu.Unlock()
	return len(b), nil
}

func (c *recConn) Close() error                   { return nil }
func (c *recConn) CloseWrite() error              { return nil }
func (c *recConn) RemotePublicKey() key.PublicKey { return key.PublicKey{} }

func (c *recConn) got() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

func muxFrame(typ byte, flags uint16, id, length uint32) []byte {
	h := make([]byte, muxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// fakeTimer stands in for corkConn's timer: it fires when the test says,
// so no assertion depends on how long the scheduler took between two
// statements.
type fakeTimer struct {
	f      func()
	d      time.Duration
	armed  bool
	resets int
}

func (t *fakeTimer) Stop() bool {
	was := t.armed
	t.armed = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	was := t.armed
	t.armed, t.d = true, d
	t.resets++
	return was
}

// fire runs the timer's function as time.AfterFunc would once d passed.
func (t *fakeTimer) fire() {
	if t.armed {
		t.armed = false
		t.f()
	}
}

// TestCorkAckRidesWithReply: a stream's ACK waits for the first reply and
// leaves in the same message; other frames are never held; an ACK with
// nothing after it leaves on its own when the ackDelay timer fires, and
// ACKs held together share the first one's deadline.
func TestCorkAckRidesWithReply(t *testing.T) {
	rc := &recConn{}
	c := newCorkConn(rc)
	var tm *fakeTimer
	c.afterFunc = func(d time.Duration, f func()) corkTimer {
		if tm != nil {
			t.Fatal("a second timer was made")
		}
		tm = &fakeTimer{f: f, d: d, armed: true}
		return tm
	}
	defer c.Close()

	ack := muxFrame(muxTypeWindowUpdate, muxFlagACK, 1, 1<<20)
	if n, err := c.Write(ack); n != len(ack) || err != nil {
		t.Fatalf("Write(ACK) = %d, %v", n, err)
	}
	if w := rc.got(); len(w) != 0 {
		t.Fatalf("the ACK left at once: %x", w)
	}
	if tm == nil || !tm.armed || tm.d != ackDelay {
		t.Fatalf("after a held ACK the timer is %+v, want armed for %v", tm, ackDelay)
	}
	hdr := muxFrame(0, 0, 1, 5)
	if n, err := c.Write(hdr); n != len(hdr) || err != nil {
		t.Fatalf("Write(data header) = %d, %v", n, err)
	}
	c.Write([]byte("hello"))
	w := rc.got()
	if len(w) != 2 || !bytes.Equal(w[0], append(bytes.Clone(ack), hdr...)) || string(w[1]) != "hello" {
		t.Fatalf("writes %x, want ACK+header in one, then the body", w)
	}
	if tm.armed {
		t.Fatal("the timer is still armed after the ACK left with the reply")
	}

	// Not held: a window update without ACK, a SYN, a FIN.
	for _, f := range [][]byte{
		muxFrame(muxTypeWindowUpdate, 0, 1, 4096),
		muxFrame(muxTypeWindowUpdate, 1, 3, 0),
		muxFrame(muxTypeWindowUpdate, muxFlagACK|4, 1, 0),
	} {
		before := len(rc.got())
		c.Write(f)
		if w := rc.got(); len(w) != before+1 || !bytes.Equal(w[len(w)-1], f) {
			t.Fatalf("frame %x was held", f)
		}
	}

	// Lone ACKs wait for the timer, re-armed by the first of them only,
	// and then leave together without a reply.
	before := len(rc.got())
	ack5 := muxFrame(muxTypeWindowUpdate, muxFlagACK, 5, 0)
	ack7 := muxFrame(muxTypeWindowUpdate, muxFlagACK, 7, 0)
	c.Write(ack5)
	if !tm.armed || tm.d != ackDelay || tm.resets != 1 {
		t.Fatalf("after a lone ACK the timer is %+v, want armed once more for %v", tm, ackDelay)
	}
	c.Write(ack7)
	if tm.resets != 1 {
		t.Fatal("a second held ACK pushed the first one's deadline back")
	}
	if len(rc.got()) != before {
		t.Fatal("a lone ACK left before its timer fired")
	}
	tm.fire()
	if w := rc.got(); len(w) != before+1 || !bytes.Equal(w[before], append(bytes.Clone(ack5), ack7...)) {
		t.Fatalf("after the timer fired: writes %x, want the two ACKs in one", w[before:])
	}
	// Nothing is left to send: a later reply goes alone.
	c.Write(hdr)
	if w := rc.got(); len(w) != before+2 || !bytes.Equal(w[before+1], hdr) {
		t.Fatalf("writes after the flush %x, want the header alone", w[before+1:])
	}
}
