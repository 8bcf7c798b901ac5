//go:build linux && (amd64 || arm64 || riscv64 || ppc64le || loong64 || s390x || mips64 || mips64le || ppc64)

package udx

import (
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

	rh    []mmsghdr
	riov  []unix.Iovec
	rname []unix.RawSockaddrInet6

	wh    []mmsghdr
	wiov  []unix.Iovec
	wname []unix.RawSockaddrInet6
}

// mmsghdr is struct mmsghdr of <sys/socket.h> on 64-bit Linux: a msghdr,
// the byte count the kernel fills in, and padding to 8 bytes.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

const maxBatch = 64

// set points h at one datagram buffer b (through iov) and an address.
func (h *mmsghdr) set(iov *unix.Iovec, b []byte, name *unix.RawSockaddrInet6, namelen uint32) {
	iov.Base = unsafe.SliceData(b)
	iov.SetLen(len(b))
	*h = mmsghdr{}
	h.hdr.Name = (*byte)(unsafe.Pointer(name))
	h.hdr.Namelen = namelen
	h.hdr.Iov = iov
	h.hdr.SetIovlen(1)
}

// mmsg runs recvmmsg or sendmmsg (trap) on hs without blocking (the socket
// is non-blocking) and without the scheduler's system-call bookkeeping.
func mmsg(trap, fd uintptr, hs []mmsghdr) (int, syscall.Errno) {
	r, _, e := unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&hs[0])), uintptr(len(hs)), 0, 0, 0)
	return int(r), e
}

// newRawBatchIO returns nil where the raw calls are not available.
func newRawBatchIO(uc *net.UDPConn, v6 bool) batchIO {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rawMmsgIO{
		rc: rc, v6: v6,
		rh: make([]mmsghdr, maxBatch), riov: make([]unix.Iovec, maxBatch), rname: make([]unix.RawSockaddrInet6, maxBatch),
		wh: make([]mmsghdr, maxBatch), wiov: make([]unix.Iovec, maxBatch), wname: make([]unix.RawSockaddrInet6, maxBatch),
	}
}

func (m *rawMmsgIO) read(msgs []rxMsg) (int, error) {
	k := min(len(msgs), maxBatch)
	for i := range k {
		m.rh[i].set(&m.riov[i], msgs[i].buf, &m.rname[i], unix.SizeofSockaddrInet6)
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
	for i := range n {
		msgs[i].n = int(m.rh[i].n)
		msgs[i].addr = sockaddrToAddrPort(&m.rname[i])
	}
	return n, nil
}

func (m *rawMmsgIO) write(msgs []txMsg) {
	for len(msgs) > 0 {
		k := min(len(msgs), maxBatch)
		for i := range k {
			ap := msgs[i].addr
			if msgs[i].uaddr != nil {
				ap = msgs[i].uaddr.AddrPort()
			}
			m.wh[i].set(&m.wiov[i], msgs[i].b, &m.wname[i], m.putSockaddr(&m.wname[i], ap))
		}
		var n int
		var errno syscall.Errno
		err := m.rc.Write(func(fd uintptr) bool {
			n, errno = mmsg(unix.SYS_SENDMMSG, fd, m.wh[:k])
			return errno != unix.EAGAIN && errno != unix.EINTR
		})
		if err != nil || errno != 0 || n <= 0 {
			// Skip the datagram the kernel refused (e.g. EMSGSIZE for an
			// MTU probe, or an unreachable address) and go on; a closed
			// socket fails every datagram the same way.
			n = 1
		}
		msgs = msgs[n:]
	}
	for i := range m.wiov {
		m.wiov[i].Base = nil
	}
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
