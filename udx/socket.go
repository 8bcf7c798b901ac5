package udx

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

const (
	rxBatchSize  = 64
	rxBatchCount = 4
	dgramQueue   = 512
)

// Socket is one UDP socket (any net.PacketConn) shared by UDX streams and
// plain datagrams. Datagrams that are not packets of a live stream are
// queued for ReadFrom, so a Socket is itself a net.PacketConn for the
// DHT RPC and holepunch traffic that shares the port.
type Socket struct {
	u    *UDX
	ownU bool
	pc   net.PacketConn
	uc   *net.UDPConn
	bio  batchIO
	gro  groReader // bio, when the socket has UDP GRO on
	ipv6 bool

	laddr netip.AddrPort

	free   chan *rxBatch
	dgrams chan datagram

	rdl        atomic.Pointer[time.Time]
	rdlMu      sync.Mutex
	rdlChanged chan struct{} // closed when the read deadline changes

	closeOnce  sync.Once
	closed     chan struct{}
	readerDone chan struct{}

	// owned by the loop
	tx       []txMsg
	arena    []byte
	arenas   []*[wqChunkSize]byte // the pooled chunks arena was taken from
	queued   bool
	detached bool
}

type datagram struct {
	b    []byte
	addr netip.AddrPort
}

type rxMsg struct {
	buf  []byte
	n    int
	addr netip.AddrPort
}

type rxBatch struct {
	sock *Socket
	msgs []rxMsg
	n    int
	big  []*[groBufSize]byte // with GRO: the buffers msgs point into
}

type txMsg struct {
	b     []byte
	uaddr *net.UDPAddr
	addr  netip.AddrPort
}

// NewSocket wraps pc in a Socket with its own private instance; closing the
// socket closes that instance too. The socket owns pc from now on.
func NewSocket(pc net.PacketConn) (*Socket, error) {
	u := New()
	s, err := u.NewSocket(pc)
	if err != nil {
		u.Close()
		return nil, err
	}
	s.ownU = true
	return s, nil
}

// NewSocket attaches pc to the instance. The socket owns pc from now on and
// starts its reader goroutine.
func (u *UDX) NewSocket(pc net.PacketConn) (*Socket, error) {
	return u.newSocket(pc, rxBatchCount, rxBatchSize, true)
}

// NewSmallSocket is NewSocket with a receive ring of a few datagrams
// instead of 256 (512 KiB), and without receive offload, whose reader
// would hold 512 KiB. Holepunching opens up to 256 sockets at once for
// the birthday strategy; one of them at most ends up carrying a stream,
// at a modest rate.
func (u *UDX) NewSmallSocket(pc net.PacketConn) (*Socket, error) {
	return u.newSocket(pc, 2, 8, false)
}

// newSocket attaches pc with batches receive batches of batchSize
// datagrams, or, where the socket gets UDP GRO (gro, and the kernel has
// it), of groBufs coalesced buffers.
func (u *UDX) newSocket(pc net.PacketConn, batches, batchSize int, gro bool) (*Socket, error) {
	s := &Socket{u: u, pc: pc, free: make(chan *rxBatch, batches),
		dgrams: make(chan datagram, dgramQueue), closed: make(chan struct{}),
		readerDone: make(chan struct{})}
	if a, ok := pc.LocalAddr().(*net.UDPAddr); ok {
		s.laddr = a.AddrPort()
		s.ipv6 = a.IP.To4() == nil
	} else if ap, err := netip.ParseAddrPort(pc.LocalAddr().String()); err == nil {
		s.laddr = ap
		s.ipv6 = !ap.Addr().Unmap().Is4()
	}
	if uc, ok := pc.(*net.UDPConn); ok {
		s.uc = uc
		s.bio = newBatchIO(uc, s.ipv6, true, gro)
		if g, ok := s.bio.(groReader); ok && g.groOn() {
			s.gro = g
		}
		setSocketOptions(uc, s.ipv6)
	}
	for range batches {
		b := &rxBatch{sock: s}
		if s.gro != nil {
			// The datagrams point into big, taken at each read.
			b.msgs = make([]rxMsg, groBufs*groSegs)
		} else {
			b.msgs = make([]rxMsg, batchSize)
			for i := range b.msgs {
				b.msgs[i].buf = make([]byte, recvBufferSize)
			}
		}
		s.free <- b
	}
	err := u.do(func(int64) error {
		u.sockets[s] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, err
	}
	go s.reader()
	return s, nil
}

// UDX is the instance the socket belongs to.
func (s *Socket) UDX() *UDX { return s.u }

// NewStream is s.UDX().NewStream.
func (s *Socket) NewStream(id uint32, opts *StreamOptions) (*Stream, error) {
	return s.u.NewStream(id, opts)
}

func (s *Socket) localAddrPort() netip.AddrPort { return s.laddr }

func (s *Socket) reader() {
	defer close(s.readerDone)
	for {
		var b *rxBatch
		select {
		case b = <-s.free:
		case <-s.closed:
			return
		}
		var err error
		if s.gro != nil {
			for len(b.big) < groBufs {
				b.big = append(b.big, groPool.Get().(*[groBufSize]byte))
			}
			b.n, err = s.gro.readGRO(b.big, b.msgs)
		} else if s.bio != nil {
			b.n, err = s.bio.read(b.msgs)
		} else {
			m := &b.msgs[0]
			var a net.Addr
			m.n, a, err = s.pc.ReadFrom(m.buf)
			b.n = 0
			if err == nil {
				m.addr = addrPortOf(a)
				b.n = 1
			}
		}
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				s.free <- b
				continue
			}
			if isClosedErr(err) {
				return
			}
			s.free <- b
			time.Sleep(time.Millisecond) // transient (e.g. ICMP-induced) errors
			continue
		}
		select {
		case s.u.rx <- b:
		case <-s.closed:
			return
		}
	}
}

func (s *Socket) recycle(b *rxBatch) {
	if b.big != nil {
		for i := range b.n {
			b.msgs[i].buf = nil
		}
		for i, p := range b.big {
			groPool.Put(p)
			b.big[i] = nil
		}
		b.big = b.big[:0]
	}
	b.n = 0
	select {
	case s.free <- b:
	default:
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// scratch returns n bytes valid until the loop's next transmit flush.
func (s *Socket) scratch(n int) []byte {
	if len(s.arena)+n > cap(s.arena) {
		// A burst of datagrams fills several chunks before a flush,
		// which gives them back to the pool for the next one.
		if n > wqChunkSize {
			s.arena = make([]byte, 0, n)
		} else {
			c := wqPool.Get().(*[wqChunkSize]byte)
			s.arenas = append(s.arenas, c)
			s.arena = c[:0]
		}
	}
	b := s.arena[len(s.arena) : len(s.arena)+n]
	s.arena = s.arena[:len(s.arena)+n]
	return b
}

// queue schedules b for sending at the end of the loop iteration.
func (s *Socket) queue(b []byte, ua *net.UDPAddr, a netip.AddrPort) {
	if s.detached {
		return
	}
	s.tx = append(s.tx, txMsg{b: b, uaddr: ua, addr: a})
	if !s.queued {
		s.queued = true
		s.u.txq = append(s.u.txq, s)
	}
}

func (s *Socket) flushTx() {
	s.queued = false
	if len(s.tx) > 0 && !s.detached {
		if s.bio != nil {
			s.bio.write(s.tx)
		} else {
			for _, m := range s.tx {
				if s.uc != nil {
					_, _ = s.uc.WriteToUDPAddrPort(m.b, m.addr)
				} else {
					_, _ = s.pc.WriteTo(m.b, m.uaddr)
				}
			}
		}
	}
	clear(s.tx)
	s.tx = s.tx[:0]
	// Keep the last chunk (the one being filled), give back the others.
	if k := len(s.arenas); k > 1 {
		for i, c := range s.arenas[:k-1] {
			wqPool.Put(c)
			s.arenas[i] = nil
		}
		s.arenas[0] = s.arenas[k-1]
		s.arenas[k-1] = nil
		s.arenas = s.arenas[:1]
		s.arena = s.arenas[0][:0]
	}
	s.arena = s.arena[:0]
}

func (s *Socket) deliverDatagram(b []byte, from netip.AddrPort) {
	c := make([]byte, len(b))
	copy(c, b)
	select {
	case s.dgrams <- datagram{b: c, addr: from}:
	default: // the application is not reading: drop, as UDP would
	}
}

// ReadFrom returns the next datagram that was not a packet for a live
// stream (dht-rpc messages, holepunch pings, unknown ids). A deadline set
// while it waits takes effect at once, as on a net.UDPConn.
func (s *Socket) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		s.rdlMu.Lock()
		changed := s.rdlChanged
		if changed == nil {
			changed = make(chan struct{})
			s.rdlChanged = changed
		}
		s.rdlMu.Unlock()
		var tc <-chan time.Time
		if dl := s.rdl.Load(); dl != nil && !dl.IsZero() {
			d := time.Until(*dl)
			if d <= 0 {
				return 0, nil, errDeadline
			}
			t := time.NewTimer(d)
			defer t.Stop()
			tc = t.C
		}
		select {
		case d := <-s.dgrams:
			return copy(p, d.b), net.UDPAddrFromAddrPort(d.addr), nil
		case <-s.closed:
			return 0, nil, net.ErrClosed
		case <-tc:
			return 0, nil, errDeadline
		case <-changed:
		}
	}
}

// WriteTo sends a plain datagram on the socket.
func (s *Socket) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-s.closed:
		return 0, net.ErrClosed
	default:
	}
	if s.uc != nil {
		if ua, ok := addr.(*net.UDPAddr); ok {
			return s.uc.WriteToUDPAddrPort(p, ua.AddrPort())
		}
	}
	return s.pc.WriteTo(p, addr)
}

func (s *Socket) LocalAddr() net.Addr { return s.pc.LocalAddr() }

func (s *Socket) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.pc.SetWriteDeadline(t)
}

func (s *Socket) SetReadDeadline(t time.Time) error {
	s.rdl.Store(&t)
	s.rdlMu.Lock()
	if s.rdlChanged != nil {
		close(s.rdlChanged)
		s.rdlChanged = nil
	}
	s.rdlMu.Unlock()
	return nil
}

func (s *Socket) SetWriteDeadline(t time.Time) error { return s.pc.SetWriteDeadline(t) }

// Close destroys the streams connected on this socket, stops its reader and
// closes the PacketConn. A socket made by the package-level NewSocket also
// closes its private instance. Idempotent.
func (s *Socket) Close() error {
	if s.ownU {
		return s.u.Close()
	}
	err := s.u.do(func(int64) error {
		for _, st := range s.u.streams {
			if st.sock == s {
				st.destroy(ErrClosed)
			}
		}
		s.u.flushTx()
		s.u.releaseBatches()
		delete(s.u.sockets, s)
		s.detached = true
		return nil
	})
	if err != nil {
		// The instance is gone, and it shut this socket down with it.
		<-s.readerDone
		return nil
	}
	s.shutdown()
	return nil
}

func (s *Socket) shutdown() {
	s.closeOnce.Do(func() {
		close(s.closed)
		_ = s.pc.SetReadDeadline(time.Unix(1, 0))
		_ = s.pc.Close()
	})
	<-s.readerDone
}

// pathMTU would be the OS path MTU towards addr. libudx learns it from a
// temporary connected socket; we never open sockets of our own, so we leave
// it unknown (like libudx on macOS) and let probing find it.
func (s *Socket) pathMTU(netip.AddrPort) int { return 0 }
