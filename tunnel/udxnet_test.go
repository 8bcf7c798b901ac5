package tunnel

import (
	"context"
	"net"
	"sync"
	"testing"

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

	mu      sync.Mutex
	streams []*udx.Stream
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

func (n *udxNet) socket() (*udx.Socket, error) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	s, err := udx.NewSocket(pc)
	if err != nil {
		return nil, err
	}
	n.t.Cleanup(func() { s.Close() })
	return s, nil
}

func (n *udxNet) Dial(ctx context.Context, remote key.PublicKey) (PeerConn, error) {
	sa, err := n.socket()
	if err != nil {
		return nil, err
	}
	sb, err := n.socket()
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
	n.mu.Unlock()
	x, err := secretstream.Client(a, secretstream.Options{KeyPair: n.client, SendHeader: true})
	if err != nil {
		return nil, err
	}
	y, err := secretstream.Server(b, secretstream.Options{KeyPair: n.server, SendHeader: true})
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
