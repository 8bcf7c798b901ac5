//go:build linux && (amd64 || arm64 || riscv64 || ppc64le || loong64 || s390x || mips64 || mips64le || ppc64)

package udx

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawMmsgIO issues recvmmsg and sendmmsg on the non-blocking socket as raw
// system calls (RawSyscall6, inside the socket's RawConn so the netpoller
// still does the waiting). A raw call never blocks here, and it keeps the
// Go scheduler out of it: through syscall.Syscall each call marks its P as
// "in a system call", and on a loaded machine where a loopback sendmmsg
// (which delivers the datagram, receiver wake-up included, before it
// returns) takes longer than sysmon's 20 µs tick, sysmon hands the P to
// another thread and back, two thread wake-ups per packet. The first
// Syscall after an idle spell also wakes sysmon itself. Both showed as
// more than a quarter of the CPU of a keytunnel process opening tunnelled
// connections (perf, 2-core VM).
//
// The read that finds the queue empty (EAGAIN) stays, even after a short
// batch: skipping it parks the reader until the scheduler next polls the
// network, which under load is long after the next datagram arrived
// (udx throughput fell from 400 to 100 MB/s).
type rawMmsgIO struct {
	rc syscall.RawConn
	v6 bool

	// gso: sends coalesce runs of datagrams (UDP_SEGMENT); gro: the
	// socket has UDP_GRO on, and reads must go through readGRO. Both are
	// fixed at creation, except that gso turns off for good when the
	// kernel refuses a segmented send that it takes unsegmented.
	gso, gro bool
	// Offload counters, for tests: segmented sends and the datagrams in
	// them; coalesced buffers read and the datagrams in them.
	gsoSends, gsoDgrams, groReads, groDgrams int

	rh      []mmsghdr
	riov    []unix.Iovec
	rname   []unix.RawSockaddrInet6
	rctl    []cmsgBuf
	rctlLen int // of each rctl the kernel may fill (less in a test)

	wh    []mmsghdr
	wiov  []unix.Iovec
	wname []unix.RawSockaddrInet6
	wctl  []cmsgBuf
	wrun  []int // how many datagrams each of wh carries
}

// cmsgBuf is room for the control messages of one datagram: UDP_SEGMENT
// out, UDP_GRO in (24 bytes each) and room to spare, 8-byte aligned as
// cmsghdr needs.
type cmsgBuf [8]uint64

func (c *cmsgBuf) bytes() []byte { return unsafe.Slice((*byte)(unsafe.Pointer(c)), len(c)*8) }

// mmsghdr is struct mmsghdr of <sys/socket.h> on 64-bit Linux: a msghdr,
// the byte count the kernel fills in, and padding to 8 bytes.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

const (
	maxBatch = 64
	// maxIovs bounds the datagrams of one sendmmsg, however many of its
	// messages are segmented runs.
	maxIovs = 1024
)

// set points h at the datagram buffers iovs (already filled in), an
// address and, when ctl is not nil, a control buffer of ctlLen bytes.
func (h *mmsghdr) set(iovs []unix.Iovec, name *unix.RawSockaddrInet6, namelen uint32, ctl *cmsgBuf, ctlLen int) {
	*h = mmsghdr{}
	h.hdr.Name = (*byte)(unsafe.Pointer(name))
	h.hdr.Namelen = namelen
	h.hdr.Iov = &iovs[0]
	h.hdr.SetIovlen(len(iovs))
	if ctl != nil {
		h.hdr.Control = (*byte)(unsafe.Pointer(ctl))
		h.hdr.SetControllen(ctlLen)
	}
}

func setIov(iov *unix.Iovec, b []byte) {
	iov.Base = unsafe.SliceData(b)
	iov.SetLen(len(b))
}

// mmsg runs recvmmsg or sendmmsg (trap) on hs without blocking (the socket
// is non-blocking) and without the scheduler's system-call bookkeeping.
func mmsg(trap, fd uintptr, hs []mmsghdr) (int, syscall.Errno) {
	r, _, e := unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&hs[0])), uintptr(len(hs)), 0, 0, 0)
	return int(r), e
}

// newRawBatchIO returns nil where the raw calls are not available. gso and
// gro ask for the offloads, which are used where the kernel has them.
func newRawBatchIO(uc *net.UDPConn, v6, gso, gro bool) batchIO {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	m := &rawMmsgIO{
		rc: rc, v6: v6,
		rh: make([]mmsghdr, maxBatch), riov: make([]unix.Iovec, maxBatch), rname: make([]unix.RawSockaddrInet6, maxBatch),
		wh: make([]mmsghdr, maxBatch), wiov: make([]unix.Iovec, maxIovs), wname: make([]unix.RawSockaddrInet6, maxBatch),
		wctl: make([]cmsgBuf, maxBatch), wrun: make([]int, maxBatch),
	}
	_ = rc.Control(func(fd uintptr) {
		// Linux 4.18 has UDP_SEGMENT; the option reads back 0 (no
		// default segment size) where it exists.
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		m.gso = gso && err == nil
		m.gro = gro && unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	if m.gro {
		m.rctl, m.rctlLen = make([]cmsgBuf, maxBatch), int(unsafe.Sizeof(cmsgBuf{}))
	}
	return m
}

func (m *rawMmsgIO) groOn() bool { return m.gro }

// read fills msgs' own buffers, one datagram each. It is for sockets
// without GRO, whose datagrams never exceed those buffers.
func (m *rawMmsgIO) read(msgs []rxMsg) (int, error) {
	k := min(len(msgs), maxBatch)
	for i := range k {
		setIov(&m.riov[i], msgs[i].buf)
	}
	n, err := m.recv(k)
	for i := range n {
		msgs[i].n = int(m.rh[i].n)
		msgs[i].addr = sockaddrToAddrPort(&m.rname[i])
	}
	return n, err
}

// readGRO reads into bufs, each a datagram or a coalesced run of them,
// and splits them into msgs, which point into bufs.
func (m *rawMmsgIO) readGRO(bufs []*[groBufSize]byte, msgs []rxMsg) (int, error) {
	k := min(len(bufs), maxBatch)
	for i := range k {
		setIov(&m.riov[i], bufs[i][:])
	}
	n, err := m.recv(k)
	j := 0
	for i := range n {
		if m.rh[i].hdr.Flags&unix.MSG_CTRUNC != 0 {
			// The segment size may be what was cut: the buffer cannot
			// be split, and one datagram of it would carry the others'
			// bytes as its payload.
			continue
		}
		seg := groSegSize(m.rctl[i].bytes(), int(m.rh[i].hdr.Controllen))
		got := splitGRO(msgs[j:], bufs[i][:m.rh[i].n], seg, sockaddrToAddrPort(&m.rname[i]))
		if got > 1 {
			m.groReads++
			m.groDgrams += got
		}
		j += got
	}
	return j, err
}

// recv runs recvmmsg on the first k of riov, which point at the buffers.
func (m *rawMmsgIO) recv(k int) (int, error) {
	for i := range k {
		var ctl *cmsgBuf
		if m.gro {
			ctl = &m.rctl[i]
		}
		m.rh[i].set(m.riov[i:i+1], &m.rname[i], unix.SizeofSockaddrInet6, ctl, m.rctlLen)
	}
	var n int
	var errno syscall.Errno
	err := m.rc.Read(func(fd uintptr) bool {
		n, errno = mmsg(unix.SYS_RECVMMSG, fd, m.rh[:k])
		return errno != unix.EAGAIN && errno != unix.EINTR
	})
	for i := range k {
		m.riov[i].Base = nil
	}
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "udp", Err: errno}
	}
	return n, nil
}

// write sends msgs in order, runs of them as one segmented datagram where
// gsoRun allows. A datagram the kernel refuses (EMSGSIZE for an MTU probe,
// an unreachable address) is skipped; a refused run is sent again
// datagram by datagram, and if that works, segmentation was the problem
// (EIO: no checksum offload on the device; EINVAL: something else this
// kernel does not do) and stays off. A segment larger than the device MTU
// is refused with EINVAL too, but then the datagrams alone fail as well.
func (m *rawMmsgIO) write(msgs []txMsg) {
	m.send(msgs)
	for i := range m.wiov {
		m.wiov[i].Base = nil
	}
}

// send is write without the clean-up; it returns how many datagrams the
// kernel took.
func (m *rawMmsgIO) send(msgs []txMsg) int {
	sent := 0
	for len(msgs) > 0 {
		k, iv := 0, 0
		for i := 0; i < len(msgs) && k < maxBatch; k++ {
			r := 1
			if m.gso {
				r = gsoRun(msgs[i:], min(maxGSOSegments, len(m.wiov)-iv), maxGSOBytes)
			}
			if r == 0 || iv+r > len(m.wiov) {
				break
			}
			for j := range r {
				setIov(&m.wiov[iv+j], msgs[i+j].b)
			}
			var ctl *cmsgBuf
			ctlLen := 0
			if r > 1 {
				ctl = &m.wctl[k]
				ctlLen = putUDPCmsg(ctl.bytes(), unix.UDP_SEGMENT, uint32(len(msgs[i].b)), 2)
			}
			m.wh[k].set(m.wiov[iv:iv+r], &m.wname[k], m.putSockaddr(&m.wname[k], msgs[i].dest()), ctl, ctlLen)
			m.wrun[k] = r
			i += r
			iv += r
		}
		var n int
		var errno syscall.Errno
		err := m.rc.Write(func(fd uintptr) bool {
			n, errno = mmsg(unix.SYS_SENDMMSG, fd, m.wh[:k])
			return errno != unix.EAGAIN && errno != unix.EINTR
		})
		if err == nil && errno == 0 && n > 0 {
			for _, r := range m.wrun[:n] {
				if r > 1 {
					m.gsoSends++
					m.gsoDgrams += r
				}
				sent += r
				msgs = msgs[r:]
			}
			continue
		}
		r := m.wrun[0]
		if r > 1 && err == nil {
			m.gso = false
			ok := m.send(msgs[:r])
			m.gso = ok == 0 || (errno != unix.EIO && errno != unix.EINVAL)
			sent += ok
		}
		// A closed socket fails every datagram the same way.
		msgs = msgs[r:]
	}
	return sent
}

// putSockaddr writes ap as the socket's address family expects: an IPv6
// socket takes IPv4 peers as v4-mapped addresses.
func (m *rawMmsgIO) putSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) uint32 {
	port := ap.Port()
	if !m.v6 {
		if !ap.Addr().Unmap().Is4() {
			// No IPv4 address: the kernel refuses the empty family
			// and write skips the datagram.
			*sa = unix.RawSockaddrInet6{}
			return unix.SizeofSockaddrInet4
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().Unmap().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return unix.SizeofSockaddrInet6
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	port := uint16(p[0])<<8 | uint16(p[1])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
	}
	return netip.AddrPort{}
}

// A control message on 64-bit Linux (struct cmsghdr, <sys/socket.h>), in
// native byte order:
//
//	0   8  cmsg_len: 16 + the data's length (padding not counted)
//	8   4  cmsg_level: IPPROTO_UDP (17) for both offloads
//	12  4  cmsg_type: UDP_SEGMENT (103) or UDP_GRO (104)
//	16  n  data: UDP_SEGMENT a uint16 segment size; UDP_GRO an int
//	16+n   zero padding to a multiple of 8, before the next message
const cmsgHdrLen = 16

// putUDPCmsg writes an IPPROTO_UDP control message of type typ whose data
// is v in n (2 or 4) bytes at the start of b, and returns the space it
// takes.
func putUDPCmsg(b []byte, typ int32, v uint32, n int) int {
	space := unix.CmsgSpace(n)
	clear(b[:space])
	binary.NativeEndian.PutUint64(b[0:], uint64(unix.CmsgLen(n)))
	binary.NativeEndian.PutUint32(b[8:], uint32(unix.IPPROTO_UDP))
	binary.NativeEndian.PutUint32(b[12:], uint32(typ))
	if n == 2 {
		binary.NativeEndian.PutUint16(b[cmsgHdrLen:], uint16(v))
	} else {
		binary.NativeEndian.PutUint32(b[cmsgHdrLen:], v)
	}
	return space
}

// groSegSize finds the UDP_GRO control message among the first n bytes of
// ctl (n as the kernel reported it) and returns its segment size, or 0
// when the datagram was not coalesced. Malformed messages end the search.
func groSegSize(ctl []byte, n int) int {
	if n < 0 || n > len(ctl) {
		return 0
	}
	ctl = ctl[:n]
	for len(ctl) >= cmsgHdrLen {
		l := binary.NativeEndian.Uint64(ctl[0:])
		if l < cmsgHdrLen || l > uint64(len(ctl)) {
			return 0
		}
		level := int32(binary.NativeEndian.Uint32(ctl[8:]))
		typ := int32(binary.NativeEndian.Uint32(ctl[12:]))
		if level == unix.IPPROTO_UDP && typ == unix.UDP_GRO && l >= cmsgHdrLen+4 {
			seg := int32(binary.NativeEndian.Uint32(ctl[cmsgHdrLen:]))
			return int(max(seg, 0))
		}
		next := (l + 7) &^ 7
		if next >= uint64(len(ctl)) {
			return 0
		}
		ctl = ctl[next:]
	}
	return 0
}
