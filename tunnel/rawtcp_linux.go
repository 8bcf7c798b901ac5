package tunnel

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawTCP moves a bulk transfer's bytes to and from a local TCP connection
// (the client's, or the target's) with raw read and write system calls
// on the non-blocking socket, inside its RawConn, so that the netpoller
// still does the waiting and deadlines still apply. Through net.Conn each
// call marks the process's one P as in a system call (keytunnel runs on
// one P, see cmd/keytunnel), and a loopback write of 100 KB, which runs
// the receiver's TCP input before it returns, outlasts sysmon's 20 µs
// tick: sysmon hands the P to another thread, which the call then waits
// to get back from. udx's sendmmsg and recvmmsg are raw for the same
// reason (udx/rawmmsg_linux.go). A raw call on a non-blocking socket
// never blocks.
//
// Measured on the 2-core VM (go test -run XXX -bench Stream/keytunnel
// -benchtime 2x ./bench/, 8 runs with and 8 without, interleaved):
// 289 → 352 MB/s on average, expose 2.06 → 1.75 CPU s/GiB, forward
// 2.15 → 2.05.
type rawTCP struct {
	c  *net.TCPConn
	rc syscall.RawConn
}

// rawTCPOf returns c's raw I/O, or nil when c is not a TCP connection.
func rawTCPOf(c conn) *rawTCP {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rawTCP{c: tc, rc: rc}
}

// read is Read: io.EOF at the end, the poller's errors (a deadline, a
// closed connection) as they are, a failed call as a *net.OpError.
func (r *rawTCP) read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, errno = int(m), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, r.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// write is Write: all of b, or an error.
func (r *rawTCP) write(b []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := r.rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			// send(2) with MSG_NOSIGNAL: a peer gone gives EPIPE without
			// a SIGPIPE to the thread.
			m, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[n])), uintptr(len(b)-n), syscall.MSG_NOSIGNAL, 0, 0)
			switch e {
			case 0:
				n += int(m)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err == nil && errno != 0 {
		err = r.opError("write", errno)
	}
	return n, err
}

// opError is the error net.Conn would have returned for errno.
func (r *rawTCP) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.c.LocalAddr(), Addr: r.c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
