package dht

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/udx"
	"golang.org/x/net/ipv4"
)

// punchConn is the node's main socket as dht-rpc sees it. hyperdht's
// holepunch datagrams are a single byte, which dht-rpc ignores (its
// messages are at least two bytes); they are diverted to the node's
// punch handlers before dht-rpc reads.
type punchConn struct {
	*udx.Socket
	onPunch func(s *udx.Socket, from netip.AddrPort)
}

func (p *punchConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := p.Socket.ReadFrom(b)
		if err != nil || n != 1 {
			return n, addr, err
		}
		if ua, ok := addr.(*net.UDPAddr); ok {
			ap := ua.AddrPort()
			p.onPunch(p.Socket, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
}

// ttlSocket sends holepunch datagrams on a udx socket with a chosen TTL.
// The TTL is a socket option, so sends that need a low TTL are serialised
// with the option change; everything else goes out with the default.
type ttlSocket struct {
	s  *udx.Socket
	mu sync.Mutex
	pc *ipv4.PacketConn // nil when the socket is not a real UDP socket
}

func newTTLSocket(s *udx.Socket, pc net.PacketConn) *ttlSocket {
	t := &ttlSocket{s: s}
	if uc, ok := pc.(*net.UDPConn); ok {
		t.pc = ipv4.NewPacketConn(uc)
	}
	return t
}

// SendTTL implements holepunch.Socket.
func (t *ttlSocket) SendTTL(b []byte, addr netip.AddrPort, ttl int) error {
	if t.pc == nil || ttl == 64 {
		_, err := t.s.WriteTo(b, net.UDPAddrFromAddrPort(addr))
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.pc.SetTTL(ttl); err != nil {
		_, err := t.s.WriteTo(b, net.UDPAddrFromAddrPort(addr))
		return err
	}
	_, err := t.s.WriteTo(b, net.UDPAddrFromAddrPort(addr))
	_ = t.pc.SetTTL(64)
	return err
}

// StreamTimeout is how long the stream of a connection on a direct path
// goes on retransmitting a packet the peer does not acknowledge before it
// gives up (udx.StreamOptions.Timeout). libudx gives up after six RTOs,
// some 13 s on most paths, so a link that goes dark for longer (a train
// in a tunnel, a Wi-Fi handover gone slow) ends every connection on it;
// 45 s lets one dark for half a minute carry on where it stopped. The
// tunnels above size their own keepalive timeouts to match (see
// tunnel's doc). It is local policy, invisible on the wire. A relayed
// connection keeps libudx's timeout: it is how either side notices that
// the relay died, which nothing else tells it.
const StreamTimeout = 45 * time.Second

// newStream opens a udx stream with a random unused id, as udx-native
// picks ids.
func newStream(u *udx.UDX, opts *udx.StreamOptions) (*udx.Stream, error) {
	var b [4]byte
	for range 16 {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		id := binary.LittleEndian.Uint32(b[:])
		if id == 0 {
			continue
		}
		s, err := u.NewStream(id, opts)
		if errors.Is(err, udx.ErrIDInUse) {
			continue
		}
		return s, err
	}
	return nil, udx.ErrIDInUse
}

// timer helpers shared by connect and listen.
func sleepCtx(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// socket is the socket we connect and punch from, with its punch sender:
// the client socket while firewalled, else the server socket, as
// dht-rpc's socket getter picks.
func (n *Node) socket() (*udx.Socket, *ttlSocket) {
	if n.csock != nil && n.rpc.State().Firewalled {
		return n.csock, n.cttl
	}
	return n.sock, n.ttl
}

// ttlOf returns the punch sender of one of the node's sockets.
func (n *Node) ttlOf(s *udx.Socket) *ttlSocket {
	if s == n.csock && n.cttl != nil {
		return n.cttl
	}
	return n.ttl
}
