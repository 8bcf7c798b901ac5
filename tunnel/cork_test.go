package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
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
// leaves in the same message; frames that start no stream are never
// held; an ACK with
// nothing after it leaves on its own when the startDelay timer fires, and
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
	if tm == nil || !tm.armed || tm.d != startDelay {
		t.Fatalf("after a held ACK the timer is %+v, want armed for %v", tm, startDelay)
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

	// Not held: a window update without flags, a FIN alone, an ACK
	// with a FIN, a RST, a SYN on a data frame, a ping, a frame and a
	// half.
	for _, f := range [][]byte{
		muxFrame(muxTypeWindowUpdate, 0, 1, 4096),
		muxFrame(muxTypeWindowUpdate, muxFlagFIN, 3, 0),
		muxFrame(muxTypeWindowUpdate, muxFlagACK|muxFlagFIN, 1, 0),
		muxFrame(muxTypeWindowUpdate, muxFlagRST, 1, 0),
		muxFrame(muxTypeData, muxFlagSYN, 9, 0),
		muxFrame(2, muxFlagSYN, 0, 1),
		append(muxFrame(muxTypeWindowUpdate, muxFlagSYN, 11, 0), 0, 1, 2),
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
	if !tm.armed || tm.d != startDelay || tm.resets != 1 {
		t.Fatalf("after a lone ACK the timer is %+v, want armed once more for %v", tm, startDelay)
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

// TestCorkSynRidesWithData: on the opening side a stream's SYN waits for
// its first data and leaves in the same message, with the FIN of a
// stream that closed just before it and the control frames written
// while it waits; Close sends what is still held.
func TestCorkSynRidesWithData(t *testing.T) {
	rc := &recConn{}
	c := newCorkConn(rc)
	var tm *fakeTimer
	c.afterFunc = func(d time.Duration, f func()) corkTimer {
		tm = &fakeTimer{f: f, d: d, armed: true}
		return tm
	}
	start := append(muxFrame(muxTypeWindowUpdate, muxFlagFIN, 1, 0), muxFrame(muxTypeWindowUpdate, muxFlagSYN, 3, 1<<20)...)
	c.Write(start)
	if w := rc.got(); len(w) != 0 {
		t.Fatalf("FIN and SYN left at once: %x", w)
	}
	if tm == nil || !tm.armed || tm.d != startDelay {
		t.Fatalf("after a held SYN the timer is %+v, want armed for %v", tm, startDelay)
	}
	// A FIN and a window update written meanwhile join the held SYN
	// instead of pushing it out, and keep its deadline.
	more := append(muxFrame(muxTypeWindowUpdate, muxFlagFIN, 7, 0), muxFrame(muxTypeWindowUpdate, 0, 9, 4096)...)
	c.Write(more[:muxHeaderSize])
	c.Write(more[muxHeaderSize:])
	if w := rc.got(); len(w) != 0 || tm.resets != 0 {
		t.Fatalf("after a FIN and a window update: writes %x, timer %+v; want both held, the deadline kept", w, tm)
	}
	data := append(muxFrame(muxTypeData, 0, 3, 2), 'h', 'i')
	c.Write(data)
	if w := rc.got(); len(w) != 1 || !bytes.Equal(w[0], slices.Concat(start, more, data)) {
		t.Fatalf("writes %x, want FIN, SYN, FIN, window update and data in one", w)
	}

	syn := muxFrame(muxTypeWindowUpdate, muxFlagSYN, 5, 0)
	c.Write(syn)
	if len(rc.got()) != 1 {
		t.Fatal("a lone SYN left before its timer fired")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if w := rc.got(); len(w) != 2 || !bytes.Equal(w[1], syn) {
		t.Fatalf("after Close: writes %x, want the held SYN sent", w[1:])
	}
	c.flush() // a timer that fired as Close ran sends nothing more
	if n, err := c.Write(data); n != 0 || err == nil || len(rc.got()) != 2 {
		t.Fatalf("Write after Close = %d, %v (writes %d), want an error and nothing sent", n, err, len(rc.got()))
	}
}
