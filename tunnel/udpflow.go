package tunnel

import (
	"bufio"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keytunnel/keytunnel/internal/compact"
)

// Flow defaults (FlowOptions).
const (
	// DefaultFlowIdleTimeout is how long a UDP flow lives without a
	// datagram either way: NAT gateways keep UDP mappings for 30 s to a
	// few minutes, and a minute covers DNS, game and VoIP keepalives.
	DefaultFlowIdleTimeout = 60 * time.Second
	// DefaultMaxFlows caps the UDP flows of one forward or expose. Each
	// flow is a yamux stream (and, on the exposing side, a UDP socket).
	DefaultMaxFlows = 1024
)

// flowQueue is how many datagrams a flow holds for its stream writer;
// beyond it datagrams are dropped, as a full socket buffer drops them.
const flowQueue = 256

// FlowOptions tune the UDP flows of a UDP forward or expose. Zero fields
// take the defaults.
type FlowOptions struct {
	// IdleTimeout drops a flow after this long without a datagram in
	// either direction; the next datagram from its client starts a new
	// one. Zero means DefaultFlowIdleTimeout.
	IdleTimeout time.Duration
	// MaxFlows caps the open flows; a datagram that would start one more
	// is dropped (forward) or its flow refused (expose). Zero means
	// DefaultMaxFlows.
	MaxFlows int
}

func (o FlowOptions) withDefaults() FlowOptions {
	o.IdleTimeout = orDefault(o.IdleTimeout, DefaultFlowIdleTimeout)
	o.MaxFlows = orDefault(o.MaxFlows, DefaultMaxFlows)
	return o
}

// dgConn is a peer connection that carries unordered datagrams besides its
// byte stream: a secret stream over udx (secretstream.Conn), which is what
// a hyperdht connection, direct or through a blind relay, is.
type dgConn interface {
	SendDatagram(p []byte) error
	ReadDatagramBatch(ctx context.Context, each func(p []byte)) error
	MaxDatagram() int
}

// datagramsOf returns pc's datagram channel, or nil if it has none (a
// dht-relay stream, a TCP pair in tests): flows are then framed only.
func datagramsOf(pc PeerConn) dgConn {
	if d, ok := pc.(dgConn); ok && d.MaxDatagram() > 0 {
		return d
	}
	return nil
}

// flow is one UDP flow on either side: datagrams from the local side
// (a client address of a forward, the exposed target) go to the peer by
// toPeer, datagrams from the peer go to the local side by deliver.
type flow struct {
	id      uint32
	framing framing
	// dg, once ready is set, carries datagrams that fit the path.
	dg    dgConn
	ready atomic.Bool
	// conn carries the header, the reply and framed datagrams; set (by
	// setConn) before writeLoop starts.
	mu      sync.Mutex
	conn    io.ReadWriteCloser
	set     *flowSet    // the session's ids, which close leaves
	out     chan []byte // framed datagrams for writeLoop
	deliver func([]byte)
	// deliverBatch, when set, delivers a burst from the datagram
	// channel in one system call (udpbatch.go).
	deliverBatch *batchWriter
	last         atomic.Int64 // when a datagram last passed, in ns since flowEpoch
	done         chan struct{}
	once         sync.Once
	onClose      func()
	// stats, when set (by countIn), counts the flow as a connection and
	// its datagrams' payload: sent to the peer, received from it.
	stats   *counters
	counted func()
}

// flowEpoch is a monotonic base for flow.last.
var flowEpoch = time.Now()

func newFlow(f framing, deliver func([]byte)) *flow {
	fl := &flow{framing: f, out: make(chan []byte, flowQueue), deliver: deliver, done: make(chan struct{})}
	fl.touch()
	return fl
}

// countIn counts the flow in c until it closes; call it before the flow
// is shared.
func (f *flow) countIn(c *counters) {
	f.stats, f.counted = c, c.connOpened()
}

func (f *flow) touch() { f.last.Store(int64(time.Since(flowEpoch))) }

func (f *flow) idle(now time.Duration) time.Duration {
	return now - time.Duration(f.last.Load())
}

// toPeer sends p (which it does not keep) to the peer: as a tagged
// datagram when the flow may use the datagram channel and the datagram
// fits the path, else framed on the flow's stream (behind what is queued
// there). It never blocks: a datagram that finds the queue full is
// dropped, as UDP drops it.
func (f *flow) toPeer(p []byte) {
	f.touch()
	if f.stats != nil {
		f.stats.sent.Add(uint64(len(p)))
	}
	if f.ready.Load() && f.dg != nil {
		n := 1 + compact.UintSize(uint64(f.id)) + len(p)
		if n <= f.dg.MaxDatagram() {
			// A datagram the transport cannot take now (its queue is
			// full, or the connection is closing) is dropped: queueing
			// it on the stream instead would add reliable load where
			// there is already too much.
			bp := tagPool.Get().(*[]byte)
			*bp = appendFlowDatagram((*bp)[:0], f.id, p)
			_ = f.dg.SendDatagram(*bp) // which does not keep it
			tagPool.Put(bp)
			return
		}
	}
	b := f.framing.appendFrame(make([]byte, 0, f.framing.hdrLen()+len(p)), p)
	select {
	case f.out <- b:
	default:
	}
}

// tagPool holds buffers for tagging datagrams (toPeer).
var tagPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// fromPeer hands a datagram from the peer to the local side.
func (f *flow) fromPeer(p []byte) {
	f.touch()
	if f.stats != nil {
		f.stats.received.Add(uint64(len(p)))
	}
	f.deliver(p)
}

// writeLoop writes queued frames to conn, several per Write when they
// have piled up, until the flow closes or a write fails.
func (f *flow) writeLoop() {
	var batch []byte
	for {
		select {
		case b := <-f.out:
			batch = append(batch[:0], b...)
		drain:
			for len(batch) < bufSize {
				select {
				case b := <-f.out:
					batch = append(batch, b...)
				default:
					break drain
				}
			}
			if _, err := f.conn.Write(batch); err != nil {
				f.close()
				return
			}
		case <-f.done:
			return
		}
	}
}

// readLoop delivers framed datagrams from r until the stream ends or
// fails, then closes the flow.
func (f *flow) readLoop(r *bufio.Reader) {
	defer f.close()
	buf := make([]byte, maxDatagram)
	for {
		p, err := f.framing.readFrame(r, buf)
		if err != nil {
			return
		}
		f.fromPeer(p)
	}
}

// close ends the flow once: its stream is closed (a FIN, so the other
// side drops its end of the flow too) and onClose unregisters it.
func (f *flow) close() {
	f.once.Do(func() {
		f.mu.Lock()
		close(f.done)
		c, set := f.conn, f.set
		f.mu.Unlock()
		if c != nil {
			c.Close()
		}
		if set != nil {
			set.remove(f)
		}
		if f.onClose != nil {
			f.onClose()
		}
		if f.counted != nil {
			f.counted()
		}
	})
}

func (f *flow) isClosed() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// setConn gives the flow its stream. A flow closed meanwhile (expired or
// dropped while its stream was being opened) refuses it, and c is closed.
func (f *flow) setConn(c io.ReadWriteCloser) bool { return f.attach(c, nil) }

// attach is setConn for a flow of a session, registered in set (which
// gave it its id): a flow closed meanwhile also leaves set.
func (f *flow) attach(c io.ReadWriteCloser, set *flowSet) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.done:
		c.Close()
		if set != nil {
			set.remove(f)
		}
		return false
	default:
	}
	f.conn, f.set = c, set
	return true
}

// flowSet maps a session's flow ids to flows, for the datagrams that
// arrive on the session's datagram channel.
type flowSet struct {
	mu   sync.Mutex
	m    map[uint32]*flow
	next uint32
}

func newFlowSet() *flowSet { return &flowSet{m: map[uint32]*flow{}} }

// add gives f the next free id (a client's side).
func (s *flowSet) add(f *flow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		id := s.next
		s.next++
		if _, taken := s.m[id]; !taken {
			f.id = id
			s.m[id] = f
			return
		}
	}
}

// put registers f under the id its client chose (the exposing side);
// false if that id is taken.
func (s *flowSet) put(f *flow) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.m[f.id]; taken {
		return false
	}
	s.m[f.id] = f
	return true
}

func (s *flowSet) remove(f *flow) {
	s.mu.Lock()
	if s.m[f.id] == f {
		delete(s.m, f.id)
	}
	s.mu.Unlock()
}

func (s *flowSet) get(id uint32) *flow {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

// dispatch hands each datagram arriving on dg to its flow until ctx ends
// or dg fails, a burst (what dg queued since the last) at a time, in runs
// per flow (flowBatch). Datagrams of unknown flows (one that just closed)
// and of unknown types are dropped.
func (s *flowSet) dispatch(ctx context.Context, dg dgConn) {
	var b flowBatch
	for {
		err := dg.ReadDatagramBatch(ctx, func(d []byte) {
			id, p, ok := parseFlowDatagram(d)
			if !ok {
				return
			}
			if f := s.get(id); f != nil {
				// The peer sends on the channel only for a flow it has
				// accepted, so a client flow need not wait for the
				// stream's reply, which may come later, to send on it.
				f.ready.Store(true)
				b.add(f, p)
			}
		})
		b.flush()
		if err != nil {
			return
		}
	}
}

// flowTable is a forward's or an expose's open flows, keyed by what
// identifies a flow there, with the cap and the idle expiry.
type flowTable[K comparable] struct {
	opts FlowOptions
	mu   sync.Mutex
	m    map[K]*flow
}

func newFlowTable[K comparable](opts FlowOptions) *flowTable[K] {
	return &flowTable[K]{opts: opts.withDefaults(), m: map[K]*flow{}}
}

func (t *flowTable[K]) get(k K) *flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[k]
}

// add registers f under k unless the table is full.
func (t *flowTable[K]) add(k K, f *flow) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.opts.MaxFlows {
		return false
	}
	t.m[k] = f
	return true
}

func (t *flowTable[K]) remove(k K, f *flow) {
	t.mu.Lock()
	if t.m[k] == f {
		delete(t.m, k)
	}
	t.mu.Unlock()
}

func (t *flowTable[K]) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// expireLoop closes flows idle for longer than IdleTimeout, checking a few
// times per timeout, until ctx ends; then it closes every flow.
func (t *flowTable[K]) expireLoop(ctx context.Context) {
	tick := min(max(t.opts.IdleTimeout/4, 10*time.Millisecond), time.Second)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		select {
		case <-tk.C:
			now := time.Since(flowEpoch)
			var idle []*flow
			t.mu.Lock()
			for _, f := range t.m {
				if f.idle(now) > t.opts.IdleTimeout {
					idle = append(idle, f)
				}
			}
			t.mu.Unlock()
			for _, f := range idle {
				f.close()
			}
		case <-ctx.Done():
			t.mu.Lock()
			all := make([]*flow, 0, len(t.m))
			for _, f := range t.m {
				all = append(all, f)
			}
			t.mu.Unlock()
			for _, f := range all {
				f.close()
			}
			return
		}
	}
}

// isConnRefused reports the error a connected UDP socket returns after an
// ICMP port unreachable: one datagram was lost, nothing more.
func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
