package tunnel

import (
	"bytes"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// scriptedConn is a conn whose reads return the scripted sizes in turn
// (then EOF) and record the buffer each was given; writes are kept.
type scriptedConn struct {
	reads   []int
	bufLens []int
	out     bytes.Buffer
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

func (c *scriptedConn) Write(p []byte) (int, error) { return c.out.Write(p) }
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
