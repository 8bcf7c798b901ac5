package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// fakeNet stands in for the DHT: Dial makes a loopback TCP pair (which,
// unlike net.Pipe, has the half-close a PeerConn needs), hands one end to
// the listener registered for the key, and counts the peer connections.
type fakeNet struct {
	t     testing.TB
	tcp   net.Listener
	mu    sync.Mutex // serializes pair(), and guards the maps
	lns   map[key.PublicKey]*fakeListener
	conns []net.Conn
	dials atomic.Int64 // sessions' peer connections
	lanes atomic.Int64 // lanes' peer connections (lanepair.go)
}

func newFakeNet(t testing.TB) *fakeNet {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNet{t: t, tcp: l, lns: map[key.PublicKey]*fakeListener{}}
	t.Cleanup(func() { l.Close(); n.killAll() })
	return n
}

func (n *fakeNet) pair() (*net.TCPConn, *net.TCPConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, err := net.Dial("tcp", n.tcp.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	b, err := n.tcp.Accept()
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	n.conns = append(n.conns, a, b)
	return a.(*net.TCPConn), b.(*net.TCPConn), nil
}

// killAll drops every peer connection, as a network failure would.
func (n *fakeNet) killAll() {
	n.mu.Lock()
	cs := n.conns
	n.conns = nil
	n.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

type fakeConn struct {
	*net.TCPConn
	remote key.PublicKey
}

func (c fakeConn) RemotePublicKey() key.PublicKey { return c.remote }

type fakeListener struct {
	n      *fakeNet
	kp     key.KeyPair
	ch     chan PeerConn
	closed chan struct{}
	once   sync.Once
}

func (n *fakeNet) listen(kp key.KeyPair) *fakeListener {
	l := &fakeListener{n: n, kp: kp, ch: make(chan PeerConn), closed: make(chan struct{})}
	n.mu.Lock()
	n.lns[kp.Public] = l
	n.mu.Unlock()
	return l
}

func (l *fakeListener) Accept() (PeerConn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fakeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *fakeListener) PublicKey() key.PublicKey { return l.kp.Public }

// fakeDialer dials as the peer kp.
type fakeDialer struct {
	n  *fakeNet
	kp key.KeyPair
	// fail, while positive, makes Dial fail and counts down.
	fail atomic.Int64
	// definitive makes those failures say the peer is unreachable
	// (ErrUnreachable), as the DHT's PEER_NOT_FOUND does.
	definitive bool
	// latency stands for the DHT lookup and handshake of a real Dial.
	latency time.Duration
}

var errFakeDial = errors.New("fake dial failure")

func (d *fakeDialer) Dial(ctx context.Context, remote key.PublicKey) (PeerConn, error) {
	lane := IsLaneDial(ctx)
	if !lane && d.fail.Add(-1) >= 0 {
		if d.definitive {
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, errFakeDial)
		}
		return nil, errFakeDial
	}
	if d.latency > 0 {
		time.Sleep(d.latency)
	}
	d.n.mu.Lock()
	l := d.n.lns[remote]
	d.n.mu.Unlock()
	if l == nil {
		return nil, errors.New("fake: no such peer")
	}
	a, b, err := d.n.pair()
	if err != nil {
		return nil, err
	}
	if lane {
		d.n.lanes.Add(1)
	} else {
		d.n.dials.Add(1)
	}
	select {
	case l.ch <- fakeConn{b, d.kp.Public}:
		return fakeConn{a, remote}, nil
	case <-l.closed:
	case <-ctx.Done():
	}
	a.Close()
	b.Close()
	return nil, errors.New("fake: peer not accepting")
}

func (n *fakeNet) dialer(kp key.KeyPair) *fakeDialer { return &fakeDialer{n: n, kp: kp} }

func genKey(t testing.TB) key.KeyPair {
	kp, err := key.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// counting target servers

type target struct {
	ln      net.Listener
	accepts atomic.Int64
	wg      sync.WaitGroup
}

// newTarget serves handle on a loopback listener, counting connections.
func newTarget(t testing.TB, handle func(c *net.TCPConn)) *target {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln}
	tg.wg.Add(1)
	go func() {
		defer tg.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.accepts.Add(1)
			tg.wg.Add(1)
			go func() {
				defer tg.wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); tg.wg.Wait() })
	return tg
}

func (tg *target) addr() string { return tg.ln.Addr().String() }

func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}
