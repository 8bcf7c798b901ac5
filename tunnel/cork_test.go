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
	wrote  chan struct{}
}

func (c *recConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(b))
	c.mu.Unlock()
	select {
	case c.wrote <- struct{}{}:
	default:
	}
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

// TestCorkAckRidesWithReply: a stream's ACK waits for the first reply and
// leaves in the same message; other frames are never held; an ACK with
// nothing after it leaves on its own after about ackDelay.
func TestCorkAckRidesWithReply(t *testing.T) {
	rc := &recConn{wrote: make(chan struct{}, 1)}
	c := newCorkConn(rc)
	defer c.Close()

	ack := muxFrame(muxTypeWindowUpdate, muxFlagACK, 1, 1<<20)
	if n, err := c.Write(ack); n != len(ack) || err != nil {
		t.Fatalf("Write(ACK) = %d, %v", n, err)
	}
	if w := rc.got(); len(w) != 0 {
		t.Fatalf("the ACK left at once: %x", w)
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

	// A lone ACK goes out by itself.
	before := len(rc.got())
	start := time.Now()
	c.Write(muxFrame(muxTypeWindowUpdate, muxFlagACK, 5, 0))
	deadline := time.After(5 * time.Second)
	for len(rc.got()) == before {
		select {
		case <-rc.wrote:
		case <-deadline:
			t.Fatal("a lone ACK was never sent")
		}
	}
	if d := time.Since(start); d < ackDelay/2 {
		t.Fatalf("a lone ACK left after %v, before ackDelay %v", d, ackDelay)
	}
}
