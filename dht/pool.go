package dht

import (
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/keytunnel/keytunnel/holepunch"
	"github.com/keytunnel/keytunnel/udx"
)

// punchPool hands out the extra sockets of the birthday strategy (our NAT
// randomizes ports, so we open many mappings towards the peer and let its
// probes find one). Each is a small udx socket on the node's instance, so
// the connection can run on whichever socket a punch reaches. A pool
// belongs to one punch: close keeps the winner open until its stream ends
// and closes the rest.
type punchPool struct {
	n       *Node
	onPunch func(s *udx.Socket, from netip.AddrPort)

	mu     sync.Mutex
	socks  map[*ttlSocket]struct{}
	closed bool
}

func (n *Node) newPunchPool(onPunch func(*udx.Socket, netip.AddrPort)) holepunch.Pool {
	if n.cfg.PunchSocket == nil {
		return nil
	}
	return &punchPool{n: n, onPunch: onPunch, socks: make(map[*ttlSocket]struct{})}
}

var errPoolClosed = errors.New("dht: punch pool closed")

// Acquire implements holepunch.Pool.
func (p *punchPool) Acquire() (holepunch.Socket, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	p.mu.Unlock()
	pc, err := p.n.cfg.PunchSocket()
	if err != nil {
		return nil, err
	}
	s, err := p.n.sock.UDX().NewSmallSocket(pc)
	if err != nil {
		pc.Close()
		return nil, err
	}
	t := newTTLSocket(s, pc)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		s.Close()
		return nil, errPoolClosed
	}
	p.socks[t] = struct{}{}
	if n := len(p.socks); n == 1 || n%64 == 0 {
		p.n.log.Debug("dht: punch pool", "sockets", n)
	}
	p.mu.Unlock()
	go func() {
		// Non-stream datagrams on a pool socket: 1-byte punches matter,
		// the rest (nothing else is expected) is dropped.
		buf := make([]byte, 2048)
		for {
			n, addr, err := s.ReadFrom(buf)
			if err != nil {
				return
			}
			if n == 1 {
				if ua, ok := addr.(*net.UDPAddr); ok {
					ap := ua.AddrPort()
					p.onPunch(s, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
				}
			}
		}
	}()
	return t, nil
}

// Release implements holepunch.Pool; sockets stay open until close, since
// a late punch may still arrive on any of them while the peer sprays.
func (p *punchPool) Release(holepunch.Socket) {}

// close closes every socket but keep (nil: all). keep stays open until
// the stream on it ends.
func (p *punchPool) close(keep *udx.Socket, done <-chan struct{}) {
	p.mu.Lock()
	p.closed = true
	socks := p.socks
	p.socks = nil
	p.mu.Unlock()
	for t := range socks {
		if t.s == keep {
			n := p.n
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				select {
				case <-done:
				case <-n.ctx.Done():
				}
				t.s.Close()
			}()
			continue
		}
		t.s.Close()
	}
}
