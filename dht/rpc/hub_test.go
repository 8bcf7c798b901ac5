package rpc

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// hub is an in-memory UDP network for tests: every memConn gets an
// address on 10.0.0.0/8; datagrams are copied and delivered in order.
type hub struct {
	mu    sync.Mutex
	conns map[netip.AddrPort]*memConn
	next  uint32
	sent  atomic.Int64
	bytes atomic.Int64
	// drop, if set, says whether to drop a datagram.
	drop func(from, to netip.AddrPort, b []byte) bool
	nats map[netip.Addr]*natBox
}

// natBox is a NAT in front of some conns: address-restricted filtering,
// ports kept per internal socket (consistent) or new per destination
// (random).
type natBox struct {
	ip     netip.Addr
	random bool
	mu     sync.Mutex
	next   uint16
	out    map[[2]netip.AddrPort]uint16 // (internal, dest or zero) → external port
	in     map[uint16]*natMapping
}

type natMapping struct {
	internal netip.AddrPort
	allowed  map[netip.Addr]bool
}

func (h *hub) addNAT(ip netip.Addr, random bool) *natBox {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nats == nil {
		h.nats = make(map[netip.Addr]*natBox)
	}
	b := &natBox{ip: ip, random: random, next: 30000, out: map[[2]netip.AddrPort]uint16{}, in: map[uint16]*natMapping{}}
	h.nats[ip] = b
	return b
}

func (b *natBox) mapOut(internal, to netip.AddrPort) netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	key := [2]netip.AddrPort{internal, {}}
	if b.random {
		key[1] = to
	}
	port, ok := b.out[key]
	if !ok {
		b.next++
		port = b.next
		b.out[key] = port
		b.in[port] = &natMapping{internal: internal, allowed: map[netip.Addr]bool{}}
	}
	b.in[port].allowed[to.Addr()] = true
	return netip.AddrPortFrom(b.ip, port)
}

func (b *natBox) mapIn(to, from netip.AddrPort) (netip.AddrPort, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.in[to.Port()]
	if m == nil || !m.allowed[from.Addr()] {
		return netip.AddrPort{}, false
	}
	return m.internal, true
}

func newHub() *hub { return &hub{conns: make(map[netip.AddrPort]*memConn)} }

type pkt struct {
	b    []byte
	from netip.AddrPort
}

type memConn struct {
	h    *hub
	nat  *natBox // if set, the conn sits behind this NAT
	addr netip.AddrPort
	in   chan pkt

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{}
	closed   bool
}

// listen makes a conn on a fresh host (or the given address if valid).
func (h *hub) listen(at netip.AddrPort) *memConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !at.IsValid() {
		h.next++
		n := h.next
		at = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 4000)
	}
	c := &memConn{h: h, addr: at, in: make(chan pkt, 4096), changed: make(chan struct{})}
	h.conns[at] = c
	return c
}

func (c *memConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, ch, closed := c.deadline, c.changed, c.closed
		c.mu.Unlock()
		if closed {
			return 0, nil, net.ErrClosed
		}
		var tc <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			tc = t.C
		}
		select {
		case k := <-c.in:
			n := copy(p, k.b)
			return n, net.UDPAddrFromAddrPort(k.from), nil
		case <-ch:
		case <-tc:
			return 0, nil, os.ErrDeadlineExceeded
		}
	}
}

func (c *memConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	to := addr.(*net.UDPAddr).AddrPort()
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c.h.sent.Add(1)
	c.h.bytes.Add(int64(len(p)))
	if c.h.drop != nil && c.h.drop(c.addr, to, p) {
		return len(p), nil
	}
	from := c.addr
	if c.nat != nil {
		from = c.nat.mapOut(c.addr, to)
	}
	c.h.mu.Lock()
	dst := c.h.conns[to]
	box := c.h.nats[to.Addr()]
	c.h.mu.Unlock()
	if dst == nil && box != nil {
		if internal, ok := box.mapIn(to, from); ok {
			c.h.mu.Lock()
			dst = c.h.conns[internal]
			c.h.mu.Unlock()
		}
	}
	if dst == nil {
		return len(p), nil
	}
	select {
	case dst.in <- pkt{b: append([]byte(nil), p...), from: from}:
	default:
	}
	return len(p), nil
}

func (c *memConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.addr) }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func (c *memConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.changed)
		c.changed = make(chan struct{})
	}
	c.mu.Unlock()
	c.h.mu.Lock()
	delete(c.h.conns, c.addr)
	c.h.mu.Unlock()
	return nil
}
