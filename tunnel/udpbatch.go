package tunnel

import (
	"net"
	"net/netip"
	"sync"

	"github.com/keytunnel/keytunnel/udx"
)

// Datagrams from the peer's datagram channel arrive in bursts (one
// ReadDatagramBatch takes what the udx stream queued since the last), and
// a burst goes to its local destination (the exposed target, a forward's
// client) in one system call (sendmmsg) where the socket allows it: at
// 100k datagrams a second, a write per datagram was the largest cost of
// the exposing side after decryption.

// writeBatchMax is the most datagrams dispatch hands a flow at once, and
// batchBytes what it copies them into.
const (
	writeBatchMax = 64
	batchBytes    = 64 << 10
)

// batchSender sends batches on one UDP socket with udx's system calls
// (udx.BatchWriter: a raw sendmmsg, GSO for runs of equal sizes), shared
// by the flows that send on the socket. Its writer is made at the first
// batch: a flow that never gets more than a datagram at a time does not
// pay for one.
type batchSender struct {
	uc *net.UDPConn
	mu sync.Mutex
	w  *udx.BatchWriter
}

func (s *batchSender) send(ps [][]byte, to netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		s.w = udx.NewBatchWriter(s.uc)
	}
	s.w.Write(ps, to)
}

// batchWriter sends a flow's batches to its destination.
type batchWriter struct {
	s  *batchSender
	to netip.AddrPort
}

// connBatchWriter returns a batch writer for a connected UDP socket (the
// exposing side's socket towards the target), or nil if c is not one.
func connBatchWriter(c net.Conn) *batchWriter {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return nil
	}
	ra, ok := uc.RemoteAddr().(*net.UDPAddr)
	if !ok {
		return nil
	}
	return &batchWriter{s: &batchSender{uc: uc}, to: ra.AddrPort()}
}

// write sends ps, each once; a datagram the socket refuses (a pending
// ICMP error, a full buffer) is lost, as with a write of its own.
func (w *batchWriter) write(ps [][]byte) { w.s.send(ps, w.to) }

// flowBatch collects a burst's datagrams of consecutive flows and hands
// each flow its run at once (flush).
type flowBatch struct {
	f   *flow
	buf []byte
	ps  [][]byte
}

// add queues p (which it copies) for f, handing the previous flow its
// datagrams first.
func (b *flowBatch) add(f *flow, p []byte) {
	if f != b.f || len(b.ps) == writeBatchMax || len(b.buf)+len(p) > cap(b.buf) {
		b.flush()
		b.f = f
	}
	if len(p) > cap(b.buf) {
		f.fromPeer(p)
		return
	}
	off := len(b.buf)
	b.buf = append(b.buf, p...)
	b.ps = append(b.ps, b.buf[off:])
}

// flush hands the queued datagrams to their flow.
func (b *flowBatch) flush() {
	if b.buf == nil {
		b.buf = make([]byte, 0, batchBytes)
	}
	if len(b.ps) > 0 {
		b.f.fromPeerBatch(b.ps)
	}
	clear(b.ps)
	b.ps, b.buf, b.f = b.ps[:0], b.buf[:0], nil
}

// fromPeerBatch is fromPeer for several datagrams.
func (f *flow) fromPeerBatch(ps [][]byte) {
	if f.deliverBatch == nil || len(ps) == 1 {
		for _, p := range ps {
			f.fromPeer(p)
		}
		return
	}
	f.touch()
	if f.stats != nil {
		n := 0
		for _, p := range ps {
			n += len(p)
		}
		f.stats.received.Add(uint64(n))
	}
	f.deliverBatch.write(ps)
}

// batchWriterTo returns a batch writer to a client of the forward, or nil
// when its socket is not a *net.UDPConn.
func (u *UDPForwarder) batchWriterTo(addr netip.AddrPort) *batchWriter {
	if u.sender == nil {
		return nil
	}
	return &batchWriter{s: u.sender, to: addr}
}
