package tunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Listener is an Exposer that hands its connections to the caller instead
// of a target: Accept returns one PeerConn per yamux stream of a keytunnel
// peer's session, and one per raw peer connection (hypertele, holesail),
// with the bytes detection read replayed in front. Peers tell the modes
// apart as for Expose, so a Forwarder and a Client reach a Listener as
// they reach an Exposer.
//
// A raw peer that stays silent for DetectTimeout is handed over as raw;
// a keytunnel peer whose preamble arrives later still is not recognised
// (the Accept caller reads the preamble bytes), which is rarer than for
// Expose, which can wait for the target to speak first.
type Listener struct {
	e  *Exposer
	ch chan PeerConn
}

// Listen starts accepting ln's peers. ExposeOptions.DialTarget, DialTimeout
// and Services do not apply. The Listener owns ln; Close closes it and every
// connection the Listener has handed out, since they ride on peer
// connections it owns.
func Listen(ln PeerListener, opts ExposeOptions) *Listener {
	l := &Listener{ch: make(chan PeerConn)}
	opts.Services = nil
	l.e = newExposer(ln, "", opts, l.deliver)
	return l
}

func (l *Listener) deliver(ctx context.Context, c PeerConn) bool {
	select {
	case l.ch <- c:
		return true
	case <-ctx.Done():
		return false
	}
}

// Accept waits for the next connection. After Close it returns an error
// wrapping net.ErrClosed; if the peer listener failed, that error.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptPeer() }

// AcceptPeer is Accept with the PeerConn type, which names the peer.
func (l *Listener) AcceptPeer() (PeerConn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.e.ctx.Done():
	case <-l.e.done:
		if err := l.e.Err(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrClosed, net.ErrClosed)
}

// Close stops accepting and closes every connection handed out.
func (l *Listener) Close() error { return l.e.Close() }

// Addr is the listener's public key.
func (l *Listener) Addr() net.Addr { return KeyAddr(l.e.ln.PublicKey()) }

// KeyAddr is a public key as a net.Addr (network "keytunnel").
type KeyAddr key.PublicKey

func (a KeyAddr) Network() string { return "keytunnel" }
func (a KeyAddr) String() string  { return key.PublicKey(a).String() }

// deliverRaw hands a raw peer over, with what detection read in front,
// and holds the peer until the caller closes it or the Listener closes.
func (e *Exposer) deliverRaw(pc PeerConn, got []byte, eof bool) error {
	rc := &rawConn{PeerConn: pc, r: replay(pc, got, eof), closed: make(chan struct{})}
	if !e.deliver(e.ctx, rc) {
		return ErrClosed
	}
	select {
	case <-rc.closed:
	case <-e.ctx.Done():
	}
	return nil
}

// rawConn is a raw peer connection handed to a Listener's caller.
type rawConn struct {
	PeerConn
	r      io.Reader
	once   sync.Once
	closed chan struct{}
}

func (c *rawConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *rawConn) Close() error {
	err := c.PeerConn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// streamConn is a yamux stream as a PeerConn.
type streamConn struct {
	muxStream
	remote key.PublicKey
}

func (c streamConn) RemotePublicKey() key.PublicKey { return c.remote }

var (
	_ net.Listener = (*Listener)(nil)
	_ PeerConn     = streamConn{}
	_ PeerConn     = (*rawConn)(nil)
)
