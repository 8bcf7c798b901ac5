package tunnel

import (
	"net"
	"net/netip"

	"github.com/keytunnel/keytunnel/udx"
)

// readBatch is how many datagrams a forward's socket reader takes per
// system call where it can (recvmmsg), each into a buffer of the largest
// UDP payload: 16 x 64 KiB. One wake-up of the reader then moves a burst
// instead of one datagram.
const readBatch = 16

// datagramReader reads a forward's local socket: in batches from a
// *net.UDPConn (udx.BatchReader: recvmmsg as a raw system call, which
// keeps sysmon and its P hand-offs out of a busy reader's way), else one
// datagram per call.
type datagramReader struct {
	pc  net.PacketConn
	br  *udx.BatchReader
	buf []byte
}

func newDatagramReader(pc net.PacketConn) *datagramReader {
	if uc, ok := pc.(*net.UDPConn); ok {
		return &datagramReader{pc: pc, br: udx.NewBatchReader(uc, readBatch, maxDatagram)}
	}
	return &datagramReader{pc: pc, buf: make([]byte, maxDatagram)}
}

// read returns the next datagrams: each's payload and sender, valid until
// the next read.
func (r *datagramReader) read(each func(p []byte, from netip.AddrPort)) error {
	if r.br == nil {
		n, from, err := readFromAddrPort(r.pc, r.buf)
		if err != nil {
			return err
		}
		each(r.buf[:n], from)
		return nil
	}
	return r.br.Read(func(p []byte, from netip.AddrPort) {
		each(p, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	})
}
