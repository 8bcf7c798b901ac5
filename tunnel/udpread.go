package tunnel

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// readBatch is how many datagrams a forward's socket reader takes per
// system call where it can (recvmmsg), each into a buffer of the largest
// UDP payload: 16 x 64 KiB. One wake-up of the reader then moves a burst
// instead of one datagram.
const readBatch = 16

// datagramReader reads a forward's local socket: in batches from an IPv4
// *net.UDPConn bound to a specific address (golang.org/x/net/ipv4's
// ReadBatch), else one datagram per call. (A wildcard or IPv6 address
// may be an IPv6 socket, whose batch addresses ipv4 would not parse.)
type datagramReader struct {
	pc net.PacketConn
	bp *ipv4.PacketConn
	ms []ipv4.Message
}

func newDatagramReader(pc net.PacketConn) *datagramReader {
	r := &datagramReader{pc: pc, bp: batchConn(pc)}
	n := 1
	if r.bp != nil {
		n = readBatch
	}
	r.ms = make([]ipv4.Message, n)
	for i := range r.ms {
		r.ms[i].Buffers = [][]byte{make([]byte, maxDatagram)}
	}
	return r
}

// read returns the next datagrams: each's payload and sender, valid until
// the next read.
func (r *datagramReader) read(each func(p []byte, from netip.AddrPort)) error {
	if r.bp == nil {
		n, from, err := readFromAddrPort(r.pc, r.ms[0].Buffers[0])
		if err != nil {
			return err
		}
		each(r.ms[0].Buffers[0][:n], from)
		return nil
	}
	k, err := r.bp.ReadBatch(r.ms, 0)
	if err != nil {
		return err
	}
	for _, m := range r.ms[:k] {
		a, ok := m.Addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		ap := a.AddrPort()
		each(m.Buffers[0][:m.N], netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return nil
}

// batchConn returns pc for batch reads and writes (golang.org/x/net/ipv4)
// when it is an IPv4 *net.UDPConn bound to a specific address, else nil.
func batchConn(pc net.PacketConn) *ipv4.PacketConn {
	if uc, ok := pc.(*net.UDPConn); ok {
		if a, ok := uc.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil && !a.IP.IsUnspecified() {
			return ipv4.NewPacketConn(uc)
		}
	}
	return nil
}
