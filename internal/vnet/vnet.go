// Package vnet is an in-process virtual UDP network for tests: net.PacketConn
// endpoints joined by links with seeded, deterministic loss, duplication,
// reordering, delay, rate limit and MTU.
//
// Randomness is drawn from one seeded generator in the order datagrams are
// sent, so a run with the same seed and the same send order makes the same
// decisions. One scheduler goroutine per Network delivers delayed datagrams;
// Close stops it and waits.
package vnet

import (
	"container/heap"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// Config describes every link of a Network (the same in both directions).
type Config struct {
	Seed      uint64
	Loss      float64       // probability a datagram is dropped
	Duplicate float64       // probability a datagram is delivered twice
	Reorder   float64       // probability a datagram gets ReorderDelay extra
	Delay     time.Duration // one-way propagation delay
	// ReorderDelay is the extra delay of a reordered datagram; default Delay/2 (at least 1 ms).
	ReorderDelay time.Duration
	Rate         int64 // bytes per second per sender; 0 = unlimited
	// QueueLimit is the longest a datagram may wait behind the rate limit
	// before it is tail-dropped; default 100 ms.
	QueueLimit time.Duration
	MTU        int // largest datagram payload delivered; 0 = unlimited
	// RecvQueue is each endpoint's receive queue length; default 4096.
	RecvQueue int
}

// Network is a set of endpoints.
type Network struct {
	cfg Config

	mu     sync.Mutex
	rng    *rand.Rand
	conns  map[netip.AddrPort]*Conn
	nextIP uint32
	q      pktHeap
	seq    uint64
	wake   chan struct{}
	closed bool

	stop chan struct{}
	done chan struct{}

	// Stats
	Sent, Dropped, Duplicated, Reordered, TooBig uint64
}

// New starts a network.
func New(cfg Config) *Network {
	if cfg.ReorderDelay == 0 {
		cfg.ReorderDelay = max(cfg.Delay/2, time.Millisecond)
	}
	if cfg.QueueLimit == 0 {
		cfg.QueueLimit = 100 * time.Millisecond
	}
	if cfg.RecvQueue == 0 {
		cfg.RecvQueue = 4096
	}
	n := &Network{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		conns: map[netip.AddrPort]*Conn{}, nextIP: 0x0a000001,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go n.run()
	return n
}

// Close closes every endpoint and stops the scheduler.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		<-n.done
		return nil
	}
	n.closed = true
	conns := make([]*Conn, 0, len(n.conns))
	for _, c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	close(n.stop)
	<-n.done
	return nil
}

// Listen creates an endpoint. A zero address picks the next 10.0.0.x:1000.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, net.ErrClosed
	}
	if !addr.IsValid() {
		ip := n.nextIP
		n.nextIP++
		addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}), 1000)
	}
	if _, ok := n.conns[addr]; ok {
		return nil, errors.New("vnet: address in use")
	}
	c := &Conn{n: n, addr: addr, in: make(chan packet, n.cfg.RecvQueue), closed: make(chan struct{})}
	n.conns[addr] = c
	return c, nil
}

type packet struct {
	at   time.Time
	seq  uint64
	b    []byte
	from netip.AddrPort
	to   netip.AddrPort
}

type pktHeap []packet

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(packet)) }
func (h *pktHeap) Pop() any {
	o := *h
	p := o[len(o)-1]
	*h = o[:len(o)-1]
	return p
}

func (n *Network) send(c *Conn, b []byte, to netip.AddrPort) {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.Sent++
	if n.cfg.MTU > 0 && len(b) > n.cfg.MTU {
		n.TooBig++
		return
	}
	depart := now
	if n.cfg.Rate > 0 {
		if c.busyUntil.Before(now) {
			c.busyUntil = now
		}
		if c.busyUntil.Sub(now) > n.cfg.QueueLimit {
			n.Dropped++
			return
		}
		c.busyUntil = c.busyUntil.Add(time.Duration(int64(len(b)) * int64(time.Second) / n.cfg.Rate))
		depart = c.busyUntil
	}
	if n.rng.Float64() < n.cfg.Loss {
		n.Dropped++
		return
	}
	copies := 1
	if n.rng.Float64() < n.cfg.Duplicate {
		copies = 2
		n.Duplicated++
	}
	for range copies {
		at := depart.Add(n.cfg.Delay)
		if n.rng.Float64() < n.cfg.Reorder {
			at = at.Add(n.cfg.ReorderDelay)
			n.Reordered++
		}
		d := make([]byte, len(b))
		copy(d, b)
		n.seq++
		heap.Push(&n.q, packet{at: at, seq: n.seq, b: d, from: c.addr, to: to})
	}
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *Network) run() {
	defer close(n.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		n.mu.Lock()
		now := time.Now()
		var due []packet
		for n.q.Len() > 0 && !n.q[0].at.After(now) {
			due = append(due, heap.Pop(&n.q).(packet))
		}
		var wait time.Duration = time.Hour
		if n.q.Len() > 0 {
			wait = n.q[0].at.Sub(now)
		}
		n.mu.Unlock()
		for _, p := range due {
			n.mu.Lock()
			c := n.conns[p.to]
			n.mu.Unlock()
			if c != nil {
				c.deliver(p)
			}
		}
		if len(due) > 0 {
			continue
		}
		t.Reset(wait)
		select {
		case <-n.stop:
			return
		case <-n.wake:
		case <-t.C:
		}
	}
}

// Conn is one endpoint; it implements net.PacketConn.
type Conn struct {
	n         *Network
	addr      netip.AddrPort
	in        chan packet
	busyUntil time.Time // guarded by n.mu

	mu        sync.Mutex
	rdl, wdl  time.Time
	dlChanged chan struct{}
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *Conn) deliver(p packet) {
	select {
	case <-c.closed:
	case c.in <- p:
	default: // receive queue full: dropped like a full socket buffer
		c.n.mu.Lock()
		c.n.Dropped++
		c.n.mu.Unlock()
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "vnet: i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Is(t error) bool { return t == os.ErrDeadlineExceeded }

func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl := c.rdl
		if c.dlChanged == nil {
			c.dlChanged = make(chan struct{})
		}
		ch := c.dlChanged
		c.mu.Unlock()
		var tc <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, timeoutError{}
			}
			t := time.NewTimer(d)
			tc = t.C
			defer t.Stop()
		}
		select {
		case p := <-c.in:
			return copy(b, p.b), net.UDPAddrFromAddrPort(p.from), nil
		case <-c.closed:
			return 0, nil, net.ErrClosed
		case <-tc:
			return 0, nil, timeoutError{}
		case <-ch:
		}
	}
}

func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	var to netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		to = a.AddrPort()
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return 0, err
		}
		to = ap
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c.n.send(c, b, to)
	return len(b), nil
}

func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.n.mu.Lock()
		if c.n.conns[c.addr] == c {
			delete(c.n.conns, c.addr)
		}
		c.n.mu.Unlock()
	})
	return nil
}

func (c *Conn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.addr) }

// AddrPort is the endpoint's address.
func (c *Conn) AddrPort() netip.AddrPort { return c.addr }

func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.rdl = t
	if c.dlChanged != nil {
		close(c.dlChanged)
		c.dlChanged = nil
	}
	c.mu.Unlock()
	return nil
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.mu.Unlock()
	return nil
}
