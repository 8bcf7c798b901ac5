package udx

import (
	"net"
	"net/netip"
)

// BatchWriter sends datagrams on a UDP socket of the caller's (one udx
// does not carry streams on) with the system calls udx uses for its own
// packets: one sendmmsg per batch, issued as a raw system call on Linux
// (see rawMmsgIO: a sendmmsg through syscall.Syscall that outlasts
// sysmon's 20 µs tick hands the P to another thread and back), and UDP
// GSO for runs of equal-sized datagrams where the kernel has it. A
// program relaying datagrams between a udx stream and a local socket
// (keytunnel's UDP flows) pays the same costs on both sides then.
type BatchWriter struct {
	uc   *net.UDPConn
	bio  batchIO // nil: one write per datagram
	msgs []txMsg
}

// NewBatchWriter returns a writer for uc, which stays the caller's: the
// writer sets no option on it and never closes it.
func NewBatchWriter(uc *net.UDPConn) *BatchWriter {
	w := &BatchWriter{uc: uc}
	if a, ok := uc.LocalAddr().(*net.UDPAddr); ok {
		w.bio = newBatchIO(uc, a.IP.To4() == nil, true, false)
	}
	return w
}

// Write sends each of ps to to, once, in order. A datagram the socket
// refuses (a pending ICMP error, a full buffer) is lost, as with a write
// of its own. On a connected socket, to must be its remote address. Not
// safe for concurrent use; ps may be reused when Write returns.
func (w *BatchWriter) Write(ps [][]byte, to netip.AddrPort) {
	if w.bio == nil {
		for _, p := range ps {
			_, _ = w.uc.WriteToUDPAddrPort(p, to)
		}
		return
	}
	for _, p := range ps {
		w.msgs = append(w.msgs, txMsg{b: p, addr: to})
	}
	w.bio.write(w.msgs)
	clear(w.msgs)
	w.msgs = w.msgs[:0]
}

// BatchReader reads datagrams from a UDP socket of the caller's with
// udx's system calls: one recvmmsg per batch, raw on Linux (as
// BatchWriter's sendmmsg, and for the same reason).
type BatchReader struct {
	uc   *net.UDPConn
	bio  batchIO // nil: one read per datagram
	msgs []rxMsg
}

// NewBatchReader returns a reader of up to n datagrams per call, each
// into a buffer of size bytes (a larger datagram is cut to size), for uc,
// which stays the caller's.
func NewBatchReader(uc *net.UDPConn, n, size int) *BatchReader {
	r := &BatchReader{uc: uc}
	if a, ok := uc.LocalAddr().(*net.UDPAddr); ok {
		r.bio = newBatchIO(uc, a.IP.To4() == nil, false, false)
	}
	if r.bio == nil {
		n = 1
	}
	r.msgs = make([]rxMsg, max(min(n, maxReadBatch), 1))
	for i := range r.msgs {
		r.msgs[i].buf = make([]byte, size)
	}
	return r
}

// maxReadBatch is the most datagrams one recvmmsg takes (rawMmsgIO's).
const maxReadBatch = 64

// Read waits for datagrams and calls each with every one it read, in
// order: its payload and sender (an IPv4 sender of an IPv6 socket as a
// v4-mapped address), valid only during the call.
func (r *BatchReader) Read(each func(p []byte, from netip.AddrPort)) error {
	if r.bio == nil {
		m := &r.msgs[0]
		n, from, err := r.uc.ReadFromUDPAddrPort(m.buf)
		if err != nil {
			return err
		}
		each(m.buf[:n], from)
		return nil
	}
	n, err := r.bio.read(r.msgs)
	if err != nil {
		return err
	}
	for _, m := range r.msgs[:n] {
		each(m.buf[:m.n], m.addr)
	}
	return nil
}
