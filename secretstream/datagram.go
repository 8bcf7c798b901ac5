package secretstream

import (
	"context"
	"errors"
	"sync"
)

// ErrNoDatagrams: the raw connection cannot carry unordered datagrams
// (it is not a udx stream: a TCP connection, a dht-relay stream, a pipe),
// or the handshake has not finished.
var ErrNoDatagrams = errors.New("secretstream: this connection carries no datagrams")

// messenger is what a raw connection needs for datagrams: a udx stream's
// unreliable MESSAGE packets.
type messenger interface {
	Send(p []byte) error
	ReadMessage(ctx context.Context) ([]byte, error)
	ReadMessageBatch(ctx context.Context, each func(p []byte)) error
	MaxMessage() int
}

func (c *Conn) messenger() (messenger, *Datagrams) {
	m, ok := c.raw.(messenger)
	if !ok {
		return nil, nil
	}
	d := c.Datagrams()
	if d == nil {
		return nil, nil
	}
	return m, d
}

// MaxDatagram is the largest plaintext SendDatagram can carry in one
// packet on the current path (the raw stream's MaxMessage less the
// envelope), or 0 when the connection carries no datagrams.
func (c *Conn) MaxDatagram() int {
	m, _ := c.messenger()
	if m == nil {
		return 0
	}
	return max(m.MaxMessage()-DatagramOverhead, 0)
}

// SendDatagram sends p as one unreliable, unordered datagram: Node's
// send/trySend, which a Node peer receives as a 'message' event. Nothing
// is retransmitted; a payload above MaxDatagram may be dropped on the
// path.
func (c *Conn) SendDatagram(p []byte) error {
	m, d := c.messenger()
	if m == nil {
		return ErrNoDatagrams
	}
	bp := envPool.Get().(*[]byte)
	defer envPool.Put(bp)
	env, err := d.Seal((*bp)[:0], p)
	*bp = env
	if err != nil {
		return err
	}
	return m.Send(env) // which copies env
}

// envPool holds envelope buffers for SendDatagram.
var envPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// ReadDatagram returns the next datagram from the peer that authenticates;
// others (hyperdht's empty path confirmation, forgeries) are skipped, as
// Node does.
func (c *Conn) ReadDatagram(ctx context.Context) ([]byte, error) {
	m, d := c.messenger()
	if m == nil {
		return nil, ErrNoDatagrams
	}
	for {
		env, err := m.ReadMessage(ctx)
		if err != nil {
			return nil, err
		}
		// (x/crypto's secretbox.Open refuses to decrypt in place.)
		if p, ok := d.Open(nil, env); ok {
			return p, nil
		}
	}
}

// ReadDatagramBatch waits for datagrams from the peer and calls each with
// every one queued by then that authenticates, skipping the others as
// ReadDatagram does. A payload is valid only during its call: all are
// opened into one buffer, so that a connection receiving datagrams at a
// high rate allocates nothing per datagram.
func (c *Conn) ReadDatagramBatch(ctx context.Context, each func(p []byte)) error {
	m, d := c.messenger()
	if m == nil {
		return ErrNoDatagrams
	}
	bp := envPool.Get().(*[]byte)
	defer envPool.Put(bp)
	return m.ReadMessageBatch(ctx, func(env []byte) {
		if p, ok := d.Open((*bp)[:0], env); ok {
			*bp = p[:0]
			each(p)
		}
	})
}
