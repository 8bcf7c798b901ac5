package tunnel

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/secretstream"
	"github.com/keytunnel/keytunnel/udx"
)

// udxNet stands in for the DHT with the real transport stack: each Dial
// connects a new pair of udx streams over two loopback UDP sockets and runs
// secretstream's handshake on them, as a hyperdht connection does after
// holepunching. It counts the udx packets its streams receive. Its
// listening side (Accept, Close, PublicKey) is a fakeListener for the
// server key.
type udxNet struct {
	*fakeListener
	t      testing.TB
	client key.KeyPair
	server key.KeyPair

	// keepAlive is both secret streams' KeepAlive (0: none).
	keepAlive time.Duration
	// plain gives udx the bare *net.UDPConn, as the binary does, so that
	// it reads and writes in batches (recvmmsg, sendmmsg, GSO); vanish
	// then mutes nothing.
	plain bool

	mu      sync.Mutex
	streams []*udx.Stream
	servers []*mutedConn // the listening side's sockets, for vanish
}

func newUDXNet(t testing.TB) *udxNet {
	n := &udxNet{t: t, client: genKey(t), server: genKey(t)}
	n.fakeListener = &fakeListener{kp: n.server, ch: make(chan PeerConn), closed: make(chan struct{})}
	t.Cleanup(func() { n.Close() })
	return n
}

type ssConn struct {
	*secretstream.Conn
	remote key.PublicKey
}

func (c ssConn) RemotePublicKey() key.PublicKey { return c.remote }

func (n *udxNet) socket() (*udx.Socket, *mutedConn, error) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, err
	}
	m := &mutedConn{PacketConn: pc}
	var c net.PacketConn = m
	if n.plain {
		c = pc
	}
	s, err := udx.NewSocket(c)
	if err != nil {
		return nil, nil, err
	}
	n.t.Cleanup(func() { s.Close() })
	return s, m, nil
}

// mutedConn drops everything both ways once muted, as the path to a
// killed process does: nothing comes back, not even an ICMP error (a
// DHT socket is unconnected and never sees one).
type mutedConn struct {
	net.PacketConn
	muted atomic.Bool
}

func (c *mutedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || !c.muted.Load() {
			return n, addr, err
		}
	}
}

func (c *mutedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.muted.Load() {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (n *udxNet) Dial(ctx context.Context, remote key.PublicKey) (PeerConn, error) {
	sa, _, err := n.socket()
	if err != nil {
		return nil, err
	}
	sb, mb, err := n.socket()
	if err != nil {
		return nil, err
	}
	a, err := sa.NewStream(1, nil)
	if err != nil {
		return nil, err
	}
	b, err := sb.NewStream(2, nil)
	if err != nil {
		return nil, err
	}
	if err := a.Connect(sa, 2, sb.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		return nil, err
	}
	if err := b.Connect(sb, 1, sa.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.streams = append(n.streams, a, b)
	n.servers = append(n.servers, mb)
	n.mu.Unlock()
	x, err := secretstream.Client(a, secretstream.Options{KeyPair: n.client, SendHeader: true, KeepAlive: n.keepAlive})
	if err != nil {
		return nil, err
	}
	y, err := secretstream.Server(b, secretstream.Options{KeyPair: n.server, SendHeader: true, KeepAlive: n.keepAlive})
	if err != nil {
		return nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- y.Handshake(ctx) }()
	if err := x.Handshake(ctx); err != nil {
		return nil, err
	}
	if err := <-errc; err != nil {
		return nil, err
	}
	select {
	case n.ch <- ssConn{y, n.client.Public}:
		return ssConn{x, remote}, nil
	case <-n.closed:
		return nil, net.ErrClosed
	}
}

// vanish mutes the UDP sockets of the listening side's connections so
// far, without a word to their clients: a peer process killed, its host
// gone. The listener keeps accepting new connections, as a restarted peer
// on the same key would.
func (n *udxNet) vanish() {
	n.mu.Lock()
	ss := n.servers
	n.servers = nil
	n.mu.Unlock()
	for _, s := range ss {
		s.muted.Store(true)
	}
}

// packets is the number of udx packets the streams have received so far,
// in both directions.
func (n *udxNet) packets() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	var p uint64
	for _, s := range n.streams {
		p += s.Stats().PacketsReceived
	}
	return p
}
