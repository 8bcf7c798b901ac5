package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-yamux/v5"
)

// bufSize bounds what one direction of one connection holds in flight inside
// this package while it is not moving bulk data. 32 KiB is io.Copy's own
// size: big enough to move a yamux frame or a TCP segment batch in one
// call, small enough that thousands of tunnelled connections cost tens of
// MiB at worst. It is also the most a write takes through the send gate at
// once (muxStream.Write).
const bufSize = 32 << 10

// bulkBufSize is pump's buffer once a read has filled a bufSize one: a
// bulk transfer then moves in a quarter of the system calls (on loopback
// 0.1-0.2 CPU s/GiB less a side, of 2.2-2.6). It goes back to the pool
// at the first read of less than a quarter of bufSize, which is how a
// transfer ends or pauses, so an idle connection mostly holds a small
// one; returning it at any read that would fit the small buffer made it
// flap in the middle of transfers and saved nothing.
const bulkBufSize = 128 << 10

// writeChunk is the most muxStream.Write passes to yamux at once: whole
// frames (muxFrameBody), as many as fit in bufSize. A 32 KiB chunk went out
// as two full frames and one of 24 bytes, and each frame costs a seal, a
// lane frame and, on the receiving side, a write to the target: a third
// of the server's writes to its target in a loopback bulk transfer
// carried 24 bytes.
const writeChunk = bufSize / muxFrameBody * muxFrameBody

var (
	bufPool     = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	bulkBufPool = sync.Pool{New: func() any { b := make([]byte, bulkBufSize); return &b }}
)

// conn is what join needs from each side: full duplex, a half-close, and a
// way to unblock pending calls when the other side fails.
type conn interface {
	io.ReadWriter
	CloseWrite() error
	Close() error
	SetDeadline(time.Time) error
}

// muxStream adapts a yamux stream. Its Close ends both directions (FIN
// out, later input dropped) and frees the stream at once; a past deadline
// also wakes our own blocked Read or Write. Reset is for failures, so that
// the peer sees a truncated stream as an error rather than an end.
//
// Writes pass the session's sendGate (gate.go), which keeps a bulk
// stream from queueing far ahead of other streams' small writes; a
// muxStream without one (the zero gate) writes straight to yamux.
type muxStream struct {
	*yamux.Stream
	gate *sendGate
	stop *streamStop
}

func (s muxStream) Write(b []byte) (int, error) {
	if s.gate == nil {
		return s.Stream.Write(b)
	}
	// writeChunk at a time: window first (gatewin.go),
	// holding no credit, then credit for what yamux can send of it at
	// once.
	var total int
	id := s.StreamID()
	for len(b) > 0 {
		w, err := s.gate.reserve(id, min(len(b), writeChunk), s.stop)
		if err != nil && err != errGateClosed {
			return total, err
		}
		chunk := b[:w]
		if err := s.gate.admit(len(chunk), s.stop); err != nil && err != errGateClosed {
			s.gate.unreserve(id, len(chunk))
			return total, err
		}
		n, err := s.Stream.Write(chunk)
		if n < len(chunk) {
			s.gate.release(len(chunk) - n)
			s.gate.unreserve(id, len(chunk)-n)
		}
		total += n
		if err != nil {
			return total, err
		}
		b = b[n:]
	}
	return total, nil
}

func (s muxStream) SetDeadline(t time.Time) error {
	if s.stop != nil {
		s.stop.setDeadline(t)
	}
	return s.Stream.SetDeadline(t)
}

func (s muxStream) SetWriteDeadline(t time.Time) error {
	if s.stop != nil {
		s.stop.setDeadline(t)
	}
	return s.Stream.SetWriteDeadline(t)
}

// PeerReset reports whether err ended a tunnelled connection because the
// exposing side reset it (its target refused the connection, or a budget
// refused the stream), rather than because the peer session was lost,
// which go-yamux also reports as a reset.
func PeerReset(err error) bool {
	var se *yamux.StreamError
	return errors.As(err, &se) && se.Remote
}

// Read tells a stream cut off by the death of its session from one its
// peer ended or reset: the local side of a connection whose data may be
// cut short gets ErrSessionLost, which join turns into a TCP reset.
func (s muxStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	if n > 0 && s.gate != nil && s.gate.lanes {
		s.gate.consumed(s.StreamID(), n)
	}
	if err != nil && err != io.EOF && s.Stream.Session().IsClosed() {
		return n, ErrSessionLost
	}
	return n, err
}

// Buffered is how many bytes a Read would return without waiting for the
// peer: data yamux has already taken off the connection for this stream.
// go-yamux returns one frame per Read (16 KiB from a keytunnel peer), so
// pump asks this to gather what has arrived into one write to the
// target: in a loopback bulk transfer the receiving side made one write
// per frame, four per secret-stream message, and those writes (each also
// running the target's TCP receive in our process) were a third of its
// CPU time. It is 0 (no promise) where the gate cannot know: no gate, or
// a connection other than a laneConn.
func (s muxStream) Buffered() int {
	if s.gate == nil || !s.gate.lanes {
		return 0
	}
	return s.gate.unread(s.StreamID())
}

func (s muxStream) Close() error {
	err := s.Stream.Close()
	s.SetDeadline(time.Now())
	if s.stop != nil {
		s.stop.close()
	}
	return err
}

// SetLinger(0) is join's way of asking for a reset on Close (as for TCP).
func (s muxStream) SetLinger(int) error {
	if s.stop != nil {
		s.stop.close()
	}
	return s.Stream.Reset()
}

// join copies a to b and b to a until both directions have seen EOF, one
// fails, or ctx ends. An EOF in one direction is passed on as CloseWrite of
// the other side, so request-then-shutdown clients still get their whole
// response. Both sides are closed before join returns. The error is the
// first copy error, which caused the teardown; errors that the teardown
// itself causes in the other direction are not reported. ab and ba, when
// not nil, count the bytes copied from a to b and from b to a.
func join(ctx context.Context, a, b conn, ab, ba *atomic.Uint64) error {
	var (
		once     sync.Once
		firstErr error
	)
	abort := func(err error) {
		once.Do(func() {
			firstErr = err
			if err != nil {
				// A failure must not look like an end: TCP peers get a
				// reset, not a FIN after a truncated stream.
				resetOnClose(a)
				resetOnClose(b)
			}
			a.Close()
			b.Close()
			// Close alone does not wake a blocked Read on every conn type
			// (a yamux stream stays readable after Close); a past deadline
			// does.
			a.SetDeadline(time.Now())
			b.SetDeadline(time.Now())
		})
	}
	stop := context.AfterFunc(ctx, func() { abort(nil) })
	defer stop()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := pump(b, a, ab); err != nil {
			abort(err)
		}
	}()
	if err := pump(a, b, ba); err != nil {
		abort(err)
	}
	wg.Wait()
	abort(nil)
	return firstErr
}

// resetOnClose makes Close send a TCP RST (linger 0) where c is TCP, and
// resets c at once where it is a yamux stream.
func resetOnClose(c conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
}

// buffered is a source that knows how much a Read returns without waiting.
type buffered interface{ Buffered() int }

// pump copies src to dst and half-closes dst on EOF. It reports errors
// other than a clean EOF so that join can tear both sides down. n, when
// not nil, counts the bytes written to dst. A TCP side is read or written
// with raw system calls where the platform allows (rawTCP).
func pump(dst, src conn, n *atomic.Uint64) error {
	bp, pool := bufPool.Get().(*[]byte), &bufPool
	defer func() { pool.Put(bp) }()
	read, write := src.Read, dst.Write
	if r := rawTCPOf(src); r != nil {
		read = r.read
	}
	if w := rawTCPOf(dst); w != nil {
		write = w.write
	}
	for {
		buf := *bp
		nr, rerr := read(buf)
		// Take what src already holds too, so that it goes out in one
		// write rather than one per frame (muxStream.Buffered).
		if b, ok := src.(buffered); ok {
			for rerr == nil && nr > 0 && nr < len(buf) && b.Buffered() > 0 {
				var m int
				m, rerr = read(buf[nr:])
				nr += m
			}
		}
		if nr > 0 {
			nw, werr := write(buf[:nr])
			if n != nil {
				n.Add(uint64(nw))
			}
			if werr == nil && nw < nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
		switch {
		case nr == len(buf) && pool == &bufPool:
			pool.Put(bp)
			bp, pool = bulkBufPool.Get().(*[]byte), &bulkBufPool
		case nr < bufSize/4 && pool == &bulkBufPool:
			pool.Put(bp)
			bp, pool = bufPool.Get().(*[]byte), &bufPool
		}
	}
	if err := dst.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}
