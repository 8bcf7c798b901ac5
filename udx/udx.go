package udx

import (
	"bytes"
	"container/heap"
	"net/netip"
	"sync"
	"time"
)

// UDX is an instance: a stream-id namespace and the single goroutine (the
// loop) that owns every protocol state machine of its streams and sockets.
// Stream ids belong to the instance, not to one socket, as in libudx: a
// packet for a stream may arrive on any of the instance's sockets.
type UDX struct {
	start time.Time

	cmds chan cmd
	rx   chan *rxBatch
	kick chan struct{}

	mu    sync.Mutex
	dirty []*Stream

	closeOnce sync.Once
	closing   chan struct{}
	done      chan struct{}

	// owned by the loop
	streams map[uint32]*Stream
	sockets map[*Socket]struct{}
	wheel   streamHeap
	txq     []*Socket
	touched []*Stream
	pending []*rxBatch
}

type cmd struct {
	fn  func(now int64) error
	res chan error
}

// New starts an instance. Close stops it.
func New() *UDX {
	u := &UDX{
		start:   time.Now(),
		cmds:    make(chan cmd),
		rx:      make(chan *rxBatch, 8),
		kick:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		streams: map[uint32]*Stream{},
		sockets: map[*Socket]struct{}{},
	}
	go u.loop()
	return u
}

// now is the loop clock in µs. It starts at 1 s so that 0 can mean "unset".
func (u *UDX) now() int64 { return time.Since(u.start).Microseconds() + 1_000_000 }

// Close destroys every stream (sending DESTROY where connected), closes
// every socket and stops the loop. It is idempotent and waits.
func (u *UDX) Close() error {
	u.closeOnce.Do(func() { close(u.closing) })
	<-u.done
	return nil
}

// Streams is how many streams the instance holds (made and not yet
// destroyed): for leak checks and an operator's view of open streams.
func (u *UDX) Streams() int {
	n := 0
	_ = u.do(func(int64) error {
		n = len(u.streams)
		return nil
	})
	return n
}

// do runs fn on the loop and waits for it.
func (u *UDX) do(fn func(now int64) error) error {
	c := cmd{fn: fn, res: make(chan error, 1)}
	select {
	case u.cmds <- c:
	case <-u.done:
		return ErrClosed
	}
	select {
	case err := <-c.res:
		return err
	case <-u.done:
		return ErrClosed
	}
}

// kickStream asks the loop to service s (new writes, reads, close).
func (u *UDX) kickStream(s *Stream) {
	u.mu.Lock()
	if !s.dirty {
		s.dirty = true
		u.dirty = append(u.dirty, s)
	}
	u.mu.Unlock()
	signal(u.kick)
}

// touch marks s for a flush at the end of this loop iteration.
func (u *UDX) touch(s *Stream) {
	if !s.touchedMark {
		s.touchedMark = true
		u.touched = append(u.touched, s)
	}
}

func (u *UDX) loop() {
	defer close(u.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var dirty []*Stream
	for {
		var now int64
		select {
		case <-u.closing:
			u.shutdown()
			return
		case c := <-u.cmds:
			now = u.now()
			c.res <- c.fn(now)
		case b := <-u.rx:
			now = u.now()
			u.processBatch(b, now)
			// Drain further ready batches before flushing so that ACKs
			// cover as much as possible.
			for more := true; more; {
				select {
				case b2 := <-u.rx:
					u.processBatch(b2, now)
				default:
					more = false
				}
			}
		case <-u.kick:
			now = u.now()
		case <-timer.C:
			now = u.now()
			for u.wheel.Len() > 0 && u.wheel[0].wakeAt <= now {
				s := u.wheel[0]
				heap.Pop(&u.wheel)
				s.heapIdx = -1
				s.wakeAt = 0
				if s.paceAt != 0 && s.paceAt <= now {
					s.paceAt = 0
				}
				s.onTimer(now)
				u.touch(s)
			}
		}
		u.mu.Lock()
		dirty, u.dirty = u.dirty, dirty[:0]
		for _, s := range dirty {
			s.dirty = false
		}
		u.mu.Unlock()
		for _, s := range dirty {
			s.service(now)
			u.touch(s)
		}
		clear(dirty)
		for i := 0; i < len(u.touched); i++ {
			s := u.touched[i]
			s.flush(now)
			s.touchedMark = false
			u.schedule(s)
		}
		clear(u.touched)
		u.touched = u.touched[:0]
		u.flushTx()
		u.releaseBatches()
		if u.wheel.Len() > 0 {
			d := time.Duration(u.wheel[0].wakeAt-u.now()) * time.Microsecond
			timer.Reset(max(d, 0))
		} else {
			timer.Stop()
		}
	}
}

func (u *UDX) flushTx() {
	for _, sk := range u.txq {
		sk.flushTx()
	}
	clear(u.txq)
	u.txq = u.txq[:0]
}

func (u *UDX) shutdown() {
	now := u.now()
	for _, s := range u.streams {
		s.destroy(ErrClosed)
	}
	u.flushTx()
	u.releaseBatches()
	_ = now
	for sk := range u.sockets {
		sk.shutdown()
	}
	// Batches still in flight belong to readers that have now exited.
	for {
		select {
		case b := <-u.rx:
			b.sock.recycle(b)
		default:
			return
		}
	}
}

// processBatch demultiplexes received datagrams (libudx process_packet).
func (u *UDX) processBatch(b *rxBatch, now int64) {
	sk := b.sock
	u.pending = append(u.pending, b)
	var sacks [64]SACKBlock
	for i := range b.n {
		m := &b.msgs[i]
		raw := m.buf[:m.n]
		if !isStreamPacket(raw) || len(u.streams) == 0 {
			sk.deliverDatagram(raw, m.addr)
			continue
		}
		s := u.streams[packetID(raw)]
		if s == nil || s.dead {
			sk.deliverDatagram(raw, m.addr)
			continue
		}
		p, _ := DecodePacket(raw, sacks[:0])
		from := netip.AddrPortFrom(m.addr.Addr().Unmap(), m.addr.Port())
		// libudx asks the firewall about packets on a foreign socket. We
		// also ask, when there is one, about a connected stream's packets
		// from a new address on its own socket: a peer moving from a relay
		// to a direct path may share the socket with the relay's traffic.
		if s.sock != sk || (s.connected && s.firewall != nil && !sameAddrPort(from, s.raddr)) {
			if from.Port() == 0 {
				continue // udx-native drops packets from port 0
			}
			v := FirewallDrop
			if s.firewall != nil {
				v = s.firewall(s, sk, from)
			}
			if s.dead {
				continue
			}
			switch v {
			case FirewallDrop:
				continue
			case FirewallHold:
				if s.connected {
					break // held until connected, and it is: accept
				}
				if len(s.held) < maxHeld {
					s.held = append(s.held, heldPacket{sock: sk, from: from, raw: bytes.Clone(raw)})
				}
				continue
			case FirewallConnect:
				if s.connected {
					// Already connected elsewhere: treat as accept.
					break
				}
				s.connectLocked(sk, s.opts.RemoteID, from, now)
			case FirewallRoam:
				if !s.connected {
					s.connectLocked(sk, s.opts.RemoteID, from, now)
				} else {
					s.fromCand = s.roamCandidate(sk, from, &p)
				}
			}
		}
		s.notePathLocked(sk, from)
		s.onPacket(raw, &p, now)
		s.fromCand = false
		u.touch(s)
	}
}

func (u *UDX) releaseBatches() {
	for _, b := range u.pending {
		b.sock.recycle(b)
	}
	clear(u.pending)
	u.pending = u.pending[:0]
}

// schedule places s in the timer heap at its earliest wake-up.
func (u *UDX) schedule(s *Stream) {
	w := s.timerAt
	if s.paceAt != 0 && (w == 0 || s.paceAt < w) {
		w = s.paceAt
	}
	if s.lingerAt != 0 && (w == 0 || s.lingerAt < w) {
		w = s.lingerAt
	}
	if s.ackAt != 0 && (w == 0 || s.ackAt < w) {
		w = s.ackAt
	}
	if s.stallAt != 0 && (w == 0 || s.stallAt < w) {
		w = s.stallAt
	}
	if s.dead {
		w = 0
	}
	s.wakeAt = w
	switch {
	case w == 0 && s.heapIdx >= 0:
		heap.Remove(&u.wheel, s.heapIdx)
		s.heapIdx = -1
	case w != 0 && s.heapIdx >= 0:
		heap.Fix(&u.wheel, s.heapIdx)
	case w != 0:
		heap.Push(&u.wheel, s)
	}
}

func (u *UDX) unschedule(s *Stream) {
	if s.heapIdx >= 0 {
		heap.Remove(&u.wheel, s.heapIdx)
		s.heapIdx = -1
	}
	s.wakeAt = 0
}

type streamHeap []*Stream

func (h streamHeap) Len() int           { return len(h) }
func (h streamHeap) Less(i, j int) bool { return h[i].wakeAt < h[j].wakeAt }
func (h streamHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *streamHeap) Push(x any) {
	s := x.(*Stream)
	s.heapIdx = len(*h)
	*h = append(*h, s)
}
func (h *streamHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.heapIdx = -1
	return s
}
