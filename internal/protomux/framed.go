package protomux

import (
	"io"
	"sync"

	"github.com/keytunnel/keytunnel/secretstream"
)

// SecretStream adapts a secret-stream connection: one protomux frame is
// one secret-stream message (Conn.ReadMessage / Conn.WriteMessage).
func SecretStream(c *secretstream.Conn) Framed { return secretStreamFramed{c} }

type secretStreamFramed struct{ c *secretstream.Conn }

func (s secretStreamFramed) ReadMessage() ([]byte, error) { return s.c.ReadMessage(nil) }
func (s secretStreamFramed) WriteMessage(b []byte) error  { return s.c.WriteMessage(b) }
func (s secretStreamFramed) Close() error                 { return s.c.Close() }

// Pipe returns the two ends of an in-memory Framed duplex. Messages are
// copied on write and delivered whole and in order; the buffer between
// the ends is unbounded. Closing either end ends both: pending and later
// reads and writes fail with io.EOF (reads first deliver what was
// already written).
func Pipe() (Framed, Framed) {
	p := &pipe{sig: make(chan struct{})}
	return &pipeEnd{p: p, side: 0}, &pipeEnd{p: p, side: 1}
}

type pipe struct {
	mu     sync.Mutex
	q      [2][][]byte // q[i]: messages for side i
	sig    chan struct{}
	closed bool
}

type pipeEnd struct {
	p    *pipe
	side int
}

func (e *pipeEnd) wake() {
	close(e.p.sig)
	e.p.sig = make(chan struct{})
}

func (e *pipeEnd) ReadMessage() ([]byte, error) {
	p := e.p
	for {
		p.mu.Lock()
		if q := p.q[e.side]; len(q) > 0 {
			m := q[0]
			p.q[e.side] = q[1:]
			p.mu.Unlock()
			return m, nil
		}
		if p.closed {
			p.mu.Unlock()
			return nil, io.EOF
		}
		sig := p.sig
		p.mu.Unlock()
		<-sig
	}
}

func (e *pipeEnd) WriteMessage(b []byte) error {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return io.EOF
	}
	p.q[1-e.side] = append(p.q[1-e.side], append([]byte(nil), b...))
	e.wake()
	return nil
}

func (e *pipeEnd) Close() error {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		e.wake()
	}
	return nil
}
