package app

import (
	"io"
	"os"
	"sync"
	"time"
)

// asyncReader reads r in its own goroutine so that a past read deadline
// ends a blocked Read at once. connect needs it for a stdin that the
// runtime cannot poll (a terminal, or a blocking pipe as ssh and most
// shells hand over): os.File ignores deadlines there, and a Read would
// hold the process until the next line of input or EOF, so Ctrl-C did not
// end connect until stdin closed. The reading goroutine stays blocked in
// that Read until the process exits; connect exits right after.
type asyncReader struct {
	chunks chan chunk
	rest   chunk

	mu    sync.Mutex
	dead  chan struct{} // closed while the deadline has passed
	timer *time.Timer
}

type chunk struct {
	b   []byte
	err error
}

func newAsyncReader(r io.Reader) *asyncReader {
	a := &asyncReader{chunks: make(chan chunk), dead: make(chan struct{})}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			a.chunks <- chunk{append([]byte(nil), buf[:n]...), err}
			if err != nil {
				return
			}
		}
	}()
	return a
}

func (a *asyncReader) Read(b []byte) (int, error) {
	if len(a.rest.b) == 0 && a.rest.err == nil {
		a.mu.Lock()
		dead := a.dead
		a.mu.Unlock()
		select {
		case a.rest = <-a.chunks:
		case <-dead:
			return 0, os.ErrDeadlineExceeded
		}
	}
	n := copy(b, a.rest.b)
	a.rest.b = a.rest.b[n:]
	if len(a.rest.b) == 0 && a.rest.err != nil {
		err := a.rest.err
		if n > 0 {
			return n, nil // the error comes with the next Read
		}
		return 0, err
	}
	return n, nil
}

// SetReadDeadline makes Read return os.ErrDeadlineExceeded once t has
// passed; a zero t clears it.
func (a *asyncReader) SetReadDeadline(t time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	select {
	case <-a.dead:
		a.dead = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return nil
	}
	dead := a.dead
	if d := time.Until(t); d > 0 {
		a.timer = time.AfterFunc(d, func() { close(dead) })
	} else {
		close(dead)
	}
	return nil
}
