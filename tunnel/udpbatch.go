package tunnel

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
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

// batchWriter sends datagrams to one destination in batches. It is
// owned by one goroutine at a time (the session's dispatcher).
type batchWriter struct {
	bp *ipv4.PacketConn
	to net.Addr // nil: the socket is connected
	ms []ipv4.Message
}

// connBatchWriter returns a batch writer for a connected UDP socket (the
// exposing side's socket towards the target), or nil if c is not one.
func connBatchWriter(c net.Conn) *batchWriter {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return nil
	}
	// ipv4's batches work on any UDP socket when they carry no address.
	return &batchWriter{bp: ipv4.NewPacketConn(uc)}
}

// write sends ps, each once; a datagram the socket refuses (a pending
// ICMP error, a full buffer) is lost, as with a write of its own.
func (w *batchWriter) write(ps [][]byte) {
	for len(w.ms) < len(ps) {
		w.ms = append(w.ms, ipv4.Message{Buffers: make([][]byte, 1), Addr: w.to})
	}
	ms := w.ms[:len(ps)]
	for i, p := range ps {
		ms[i].Buffers[0] = p
	}
	for sent := 0; sent < len(ms); {
		n, err := w.bp.WriteBatch(ms[sent:], 0)
		sent += n
		if err != nil {
			sent++ // the one that failed
		}
	}
	for i := range ms {
		ms[i].Buffers[0] = nil
	}
}

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
// when pc is not an IPv4 socket bound to a specific address (see
// datagramReader: ipv4's addresses would not suit an IPv6 socket).
func (u *UDPForwarder) batchWriterTo(addr netip.AddrPort) *batchWriter {
	if u.wbp == nil || !addr.Addr().Is4() {
		return nil
	}
	return &batchWriter{bp: u.wbp, to: net.UDPAddrFromAddrPort(addr)}
}
