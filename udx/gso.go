package udx

import (
	"net/netip"
	"sync"
)

// UDP segmentation offload (GSO, UDP_SEGMENT) lets one sendmsg carry a run
// of datagrams that the kernel cuts apart again, at the device or, on
// loopback, not at all when the receiving socket asked for receive offload
// (GRO, UDP_GRO): then one recvmsg returns the run in one buffer, with its
// segment size in a control message. Datagrams on the wire are the same
// either way; a receiver without UDP_GRO (libudx) gets them one by one.
// These are the pure parts: which datagrams may share a send, and how a
// received buffer splits back into datagrams.
const (
	// maxGSOSegments is the kernel's UDP_MAX_SEGMENTS (64 before Linux
	// 6.9, which raised it; 64 is accepted everywhere).
	maxGSOSegments = 64
	// maxGSOBytes is the most payload one UDP datagram of any kind may
	// carry over IPv4 (65535 - 20 - 8), and so the most a run may hold.
	maxGSOBytes = 65507
	// groBufSize holds the largest datagram the kernel can coalesce.
	groBufSize = 64 << 10
	// groBufs is how many coalesced buffers one receive batch reads at
	// most: each may also be a single datagram (a peer without GSO), so
	// this is the batch size then. 8 × 64 KiB is about what a 1 MiB
	// socket receive buffer holds of coalesced datagrams.
	groBufs = 8
	// groSegs bounds the datagrams one coalesced buffer yields (the
	// kernel's UDP_GRO_CNT_MAX is 64).
	groSegs = 64
)

// groReader is a batchIO whose socket has UDP GRO on: its datagrams may
// arrive coalesced, so reads go into buffers of groBufSize.
type groReader interface {
	groOn() bool
	readGRO(bufs []*[groBufSize]byte, msgs []rxMsg) (int, error)
}

// dest is where m goes, whichever way its address was given.
func (m *txMsg) dest() netip.AddrPort {
	if m.uaddr != nil {
		return m.uaddr.AddrPort()
	}
	return m.addr
}

// gsoRun returns how many of msgs, from the first, may leave as one
// segmented send: the same destination, every datagram as long as the
// first except the last, which may be shorter, at most maxSegs of them and
// maxBytes in all. It is 1 when the first must go alone.
func gsoRun(msgs []txMsg, maxSegs, maxBytes int) int {
	if len(msgs) < 2 {
		return len(msgs)
	}
	size := len(msgs[0].b)
	if size == 0 {
		return 1
	}
	to := msgs[0].dest()
	total := size
	k := 1
	for k < len(msgs) && k < maxSegs {
		n := len(msgs[k].b)
		if n == 0 || n > size || total+n > maxBytes || msgs[k].dest() != to {
			break
		}
		total += n
		k++
		if n < size {
			break // a shorter datagram ends the run
		}
	}
	return k
}

// splitGRO cuts b, received from addr with segment size seg (0 when it was
// not coalesced), into datagrams in dst and returns how many. Each keeps
// only its first recvBufferSize bytes, as libudx's 2048-byte receive
// buffers do, so that the larger buffers change nothing a peer can see (an
// oversized DHT message stays truncated and is dropped). Datagrams that do
// not fit in dst are dropped, as a full socket buffer would drop them.
func splitGRO(dst []rxMsg, b []byte, seg int, addr netip.AddrPort) int {
	if seg <= 0 || seg >= len(b) {
		seg = len(b)
	}
	k := 0
	for off := 0; k < len(dst) && (off < len(b) || k == 0); off += seg {
		n := min(seg, len(b)-off, recvBufferSize)
		dst[k] = rxMsg{buf: b[off : off+n], n: n, addr: addr}
		k++
	}
	return k
}

// groPool holds the 64 KiB receive buffers of GRO sockets. A batch takes
// its buffers when its reader reads and gives them back once the loop is
// done with it, so the batches waiting for their turn hold none.
var groPool = sync.Pool{New: func() any { return new([groBufSize]byte) }}
