package tunnel

import (
	"bytes"
	"testing"
)

// TestCorkResetBetweenFrames: a reset never splits a data frame's header
// from its body: it waits for the body and leaves with it; between frames
// it leaves at once, after any held ACK.
func TestCorkResetBetweenFrames(t *testing.T) {
	rc := &recConn{}
	c := newCorkConn(rc)
	defer c.Close()
	rst := muxFrame(muxTypeWindowUpdate, muxFlagRST, 3, 0)

	hdr := muxFrame(muxTypeData, 0, 1, 5)
	c.Write(hdr)
	c.reset(3)
	if w := rc.got(); len(w) != 1 || !bytes.Equal(w[0], hdr) {
		t.Fatalf("after header and reset: %x", w)
	}
	c.Write([]byte("hello"))
	if w := rc.got(); len(w) != 2 || !bytes.Equal(w[1], append([]byte("hello"), rst...)) {
		t.Fatalf("body then reset: %x", w)
	}

	ack := muxFrame(muxTypeWindowUpdate, muxFlagACK, 3, 0)
	c.Write(ack)
	c.reset(3)
	if w := rc.got(); len(w) != 3 || !bytes.Equal(w[2], append(bytes.Clone(ack), rst...)) {
		t.Fatalf("held ACK then reset: %x", w)
	}
	// A zero-length data frame (a bare FIN) has no body to wait for.
	fin := muxFrame(muxTypeData, 4, 1, 0)
	c.Write(fin)
	c.reset(5)
	if w := rc.got(); len(w) != 5 || !bytes.Equal(w[4], muxFrame(muxTypeWindowUpdate, muxFlagRST, 5, 0)) {
		t.Fatalf("reset after an empty data frame: %x", w)
	}
}
