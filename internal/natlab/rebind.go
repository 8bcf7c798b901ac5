package natlab

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// ctnetlink message type: IPCTNL_MSG_CT_DELETE in the NFNL_SUBSYS_CTNETLINK
// subsystem (linux/netfilter/nfnetlink_conntrack.h).
const (
	nfnlSubsysCtnetlink = 1
	ipctnlMsgCtDelete   = 2
)

// flushConntrack empties the IPv4 connection tracking table of namespace
// ns, as `conntrack -F` does (the tool is not installed here), with one
// ctnetlink delete request that names no connection: the kernel then
// drops every entry of the family.
//
//	nlmsghdr  len u32, type u16 = 1<<8|2, flags u16 = REQUEST|ACK, seq u32, pid u32
//	nfgenmsg  family u8 = AF_INET, version u8 = 0, res_id be16 = 0
func flushConntrack(ns string) error {
	return inNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return fmt.Errorf("natlab: netlink socket in %s: %w", ns, err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("natlab: netlink bind in %s: %w", ns, err)
		}
		msg := make([]byte, unix.NLMSG_HDRLEN+4)
		binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
		binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysCtnetlink<<8|ipctnlMsgCtDelete)
		binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
		binary.NativeEndian.PutUint32(msg[8:], 1)
		msg[unix.NLMSG_HDRLEN] = unix.AF_INET
		if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("natlab: conntrack flush in %s: %w", ns, err)
		}
		tv := unix.NsecToTimeval(int64(2e9))
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		buf := make([]byte, 4096)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("natlab: conntrack flush in %s: no answer: %w", ns, err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b))
			typ := binary.NativeEndian.Uint16(b[4:])
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			if typ == unix.NLMSG_ERROR && l >= unix.NLMSG_HDRLEN+4 {
				if code := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); code != 0 {
					return fmt.Errorf("natlab: conntrack flush in %s: %w", ns, unix.Errno(-code))
				}
				return nil
			}
			b = b[(l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1):]
		}
		return fmt.Errorf("natlab: conntrack flush in %s: no acknowledgement", ns)
	})
}

// FlushConntrack makes the NAT forget every mapping, as a router reboot
// or a mapping timeout does: the next packet of each LAN host's flow gets
// a new mapping (a new port under Random; under Consistent usually the
// same one, since MASQUERADE keeps a free source port), and packets from
// the internet to an old mapping are dropped as unsolicited.
func (n *Net) FlushConntrack() {
	n.lab.t.Helper()
	if n.kind == Public {
		n.lab.t.Fatalf("natlab: FlushConntrack on the public internet; flush a NAT")
	}
	n.lab.must(flushConntrack(n.ns))
}

// ConntrackCount is how many connections the NAT tracks.
func (n *Net) ConntrackCount() int {
	n.lab.t.Helper()
	var count int
	n.lab.must(inNetns(n.ns, func() error {
		b, err := readProcNet("netfilter/nf_conntrack_count")
		if err != nil {
			return err
		}
		_, err = fmt.Sscan(b, &count)
		return err
	}))
	return count
}

func readProcNet(p string) (string, error) {
	b, err := os.ReadFile("/proc/sys/net/" + p)
	return string(b), err
}

// ChangeAddr gives the host a new address on its net, as a laptop or
// phone that rejoins a network gets one: the old address goes away (so
// its sockets' next packets leave from the new one, through a new NAT
// mapping behind a NAT) and the router routes the new one to the host's
// link. It returns the new address. Sockets bound to the old address
// itself stop working; those bound to 0.0.0.0 carry on.
func (h *Host) ChangeAddr() netip.Addr {
	l := h.lab
	l.t.Helper()
	n := h.net
	addr, bits := l.nextAddr(n)
	old := h.addr
	l.must(l.ip(n.ns, fmt.Sprintf("route add %s/32 dev %s", addr, h.port)))
	cmds := []string{
		fmt.Sprintf("addr del %s/%d dev eth0", old, bits),
		fmt.Sprintf("addr add %s/%d dev eth0", addr, bits),
	}
	if n.kind != Public {
		// Deleting the only address took the default route with it.
		cmds = append(cmds, "route replace default via "+n.lan.String())
	}
	l.must(l.ip(h.ns, cmds...))
	l.must(l.ip(n.ns, fmt.Sprintf("route del %s/32 dev %s", old, h.port)))
	h.addr = addr
	return addr
}
