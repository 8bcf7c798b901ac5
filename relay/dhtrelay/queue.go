package dhtrelay

import (
	"context"
	"io"
	"os"
	"sync"
	"time"
)

// chunkQueue is a byte-bounded FIFO of chunks between one producer and
// one consumer: relayed data waiting for a DHT stream (relay side) or for
// the application's Read (client side). push blocks while the queue holds
// max bytes or more, which turns a slow consumer into back-pressure on the
// producer instead of memory.
type chunkQueue struct {
	max int

	mu     sync.Mutex
	chunks [][]byte
	off    int // read offset into chunks[0]
	size   int
	eof    bool  // the producer ended (end)
	err    error // the queue failed (destroy, close)
	wake   chan struct{}
	dl     time.Time // read deadline
	dlWake *time.Timer
}

func newChunkQueue(max int) *chunkQueue {
	return &chunkQueue{max: max, wake: make(chan struct{})}
}

func (q *chunkQueue) signalLocked() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// push appends b (not copied) once there is room, or fails when the
// queue failed or done is closed.
func (q *chunkQueue) push(done <-chan struct{}, b []byte) error {
	q.mu.Lock()
	for q.err == nil && !q.eof && q.size >= q.max {
		w := q.wake
		q.mu.Unlock()
		select {
		case <-w:
		case <-done:
			return ErrClosed
		}
		q.mu.Lock()
	}
	defer q.mu.Unlock()
	if q.err != nil {
		return q.err
	}
	if q.eof {
		return io.ErrClosedPipe
	}
	if len(b) == 0 {
		return nil
	}
	q.chunks = append(q.chunks, b)
	q.size += len(b)
	q.signalLocked()
	return nil
}

// closeWrite marks the end of the data; reads return io.EOF once drained.
func (q *chunkQueue) closeWrite() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.eof {
		q.eof = true
		q.signalLocked()
	}
}

// fail makes every later call return err (the first error wins) and
// drops what is queued.
func (q *chunkQueue) fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
		q.chunks, q.size, q.off = nil, 0, 0
		q.signalLocked()
	}
}

// next returns the next chunk (a slice the caller owns), io.EOF after the
// end, or the queue's error. It waits at most until ctx ends.
func (q *chunkQueue) next(ctx context.Context) ([]byte, error) {
	q.mu.Lock()
	for {
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return nil, err
		}
		if len(q.chunks) > 0 {
			b := q.chunks[0][q.off:]
			q.chunks[0] = nil
			q.chunks = q.chunks[1:]
			q.off = 0
			q.size -= len(b)
			q.signalLocked()
			q.mu.Unlock()
			return b, nil
		}
		if q.eof {
			q.mu.Unlock()
			return nil, io.EOF
		}
		w := q.wake
		q.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		q.mu.Lock()
	}
}

// read copies queued bytes into p, honouring the read deadline.
func (q *chunkQueue) read(p []byte) (int, error) {
	q.mu.Lock()
	for {
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return 0, err
		}
		if len(q.chunks) > 0 {
			if len(p) == 0 {
				q.mu.Unlock()
				return 0, nil
			}
			n := 0
			for n < len(p) && len(q.chunks) > 0 {
				c := q.chunks[0][q.off:]
				k := copy(p[n:], c)
				n += k
				if k == len(c) {
					q.chunks[0] = nil
					q.chunks = q.chunks[1:]
					q.off = 0
				} else {
					q.off += k
				}
			}
			q.size -= n
			q.signalLocked()
			q.mu.Unlock()
			return n, nil
		}
		if q.eof {
			q.mu.Unlock()
			return 0, io.EOF
		}
		if !q.dl.IsZero() && !time.Now().Before(q.dl) {
			q.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		w := q.wake
		q.mu.Unlock()
		<-w
		q.mu.Lock()
	}
}

// setDeadline sets the read deadline; a timer wakes blocked readers when
// it passes.
func (q *chunkQueue) setDeadline(t time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dl = t
	if q.dlWake != nil {
		q.dlWake.Stop()
		q.dlWake = nil
	}
	if !t.IsZero() {
		q.dlWake = time.AfterFunc(time.Until(t), func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			q.signalLocked()
		})
	}
	q.signalLocked()
}
