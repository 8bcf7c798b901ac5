//go:build linux

package udx

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchIO moves many datagrams per system call (recvmmsg/sendmmsg).
type batchIO interface {
	read(msgs []rxMsg) (int, error)
	write(msgs []txMsg)
}

type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

type mmsgIO struct {
	c   batchConn
	rms []ipv4.Message
	wms []ipv4.Message
}

// newBatchIO batches uc's datagrams; gso and gro ask for the UDP
// offloads, used where the raw batches and the kernel have them.
func newBatchIO(uc *net.UDPConn, v6, gso, gro bool) batchIO {
	if b := newRawBatchIO(uc, v6, gso, gro); b != nil {
		return b
	}
	var c batchConn
	if v6 {
		c = v6conn{ipv6.NewPacketConn(uc)}
	} else {
		c = ipv4.NewPacketConn(uc)
	}
	return &mmsgIO{c: c}
}

type v6conn struct{ *ipv6.PacketConn }

func (c v6conn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	return c.PacketConn.ReadBatch(ms, flags)
}

func (c v6conn) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	return c.PacketConn.WriteBatch(ms, flags)
}

func (m *mmsgIO) read(msgs []rxMsg) (int, error) {
	if m.rms == nil {
		m.rms = make([]ipv4.Message, len(msgs))
		for i := range m.rms {
			m.rms[i].Buffers = [][]byte{nil}
		}
	}
	for i := range msgs {
		m.rms[i].Buffers[0] = msgs[i].buf
	}
	n, err := m.c.ReadBatch(m.rms[:len(msgs)], 0)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		msgs[i].n = m.rms[i].N
		msgs[i].addr = addrPortOf(m.rms[i].Addr)
	}
	return n, nil
}

func (m *mmsgIO) write(msgs []txMsg) {
	for len(msgs) > 0 {
		k := min(len(msgs), 64)
		if cap(m.wms) < k {
			m.wms = make([]ipv4.Message, 64)
			for i := range m.wms {
				m.wms[i].Buffers = [][]byte{nil}
			}
		}
		ms := m.wms[:k]
		for i := range ms {
			ms[i].Buffers[0] = msgs[i].b
			if msgs[i].uaddr != nil {
				ms[i].Addr = msgs[i].uaddr
			} else {
				ms[i].Addr = net.UDPAddrFromAddrPort(msgs[i].addr)
			}
		}
		n, err := m.c.WriteBatch(ms, 0)
		if err != nil || n <= 0 {
			// Skip the datagram the kernel refused (e.g. EMSGSIZE for an
			// MTU probe, or an unreachable address) and go on.
			n = 1
		}
		msgs = msgs[n:]
	}
	for i := range m.wms {
		m.wms[i].Addr = nil
		m.wms[i].Buffers[0] = nil
	}
}

// setSocketOptions mirrors libudx: don't fragment, but send whatever size we
// ask (PMTUDISC_PROBE) so MTU probes can fail cleanly instead of being
// fragmented; larger socket buffers.
func setSocketOptions(uc *net.UDPConn, v6 bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if v6 {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_MTU_DISCOVER, 3 /* IPV6_PMTUDISC_PROBE */)
		} else {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_PROBE)
		}
	})
	for _, sz := range []int{1 << 20, 512 << 10, 256 << 10, 208 << 10} {
		if uc.SetReadBuffer(sz) == nil {
			break
		}
	}
	_ = uc.SetWriteBuffer(212992)
}

func isClosedErr(err error) bool { return errors.Is(err, net.ErrClosed) }
