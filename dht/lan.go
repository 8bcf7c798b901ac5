package dht

import (
	"net"
	"net/netip"
)

// localAddresses lists this host's IPv4 interface addresses with our
// server socket's port, as hyperdht's Holepuncher.localAddresses: shared
// in both handshake payloads so that two peers behind the same NAT (which
// need not hairpin) reach each other on the LAN. A socket bound to
// loopback shares only that.
func (n *Node) localAddresses() []netip.AddrPort {
	port := n.LocalAddr().Port()
	if a := n.LocalAddr().Addr(); a.IsLoopback() {
		return []netip.AddrPort{netip.AddrPortFrom(a, port)}
	}
	var hosts []netip.Addr
	if n.cfg.LocalAddresses != nil {
		hosts = n.cfg.LocalAddresses()
	} else {
		ifs, _ := net.InterfaceAddrs()
		for _, ia := range ifs {
			if p, ok := ia.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(p.IP); ok {
					hosts = append(hosts, a.Unmap())
				}
			}
		}
	}
	var out []netip.AddrPort
	for _, h := range hosts {
		if h.Is4() && !h.IsLoopback() && !h.IsLinkLocalUnicast() && !h.IsUnspecified() {
			out = append(out, netip.AddrPortFrom(h, port))
		}
	}
	if len(out) == 0 {
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port))
	}
	return out
}

// lanCandidates keeps the addresses a peer listed that could be on a LAN
// with us (hyperdht filters out reserved ranges: loopback, link-local,
// multicast and the like; private ones stay).
func lanCandidates(addrs []netip.AddrPort) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		h := a.Addr()
		if h.Is4() && (h.IsPrivate() || h.IsGlobalUnicast()) && !h.IsLoopback() && !h.IsLinkLocalUnicast() {
			out = append(out, a)
		}
	}
	return out
}

// matchAddress picks the remote LAN address sharing the longest prefix
// (in whole octets) with one of ours, else the first (hyperdht's
// matchAddress).
func matchAddress(ours, theirs []netip.AddrPort) netip.AddrPort {
	if len(theirs) == 0 {
		return netip.AddrPort{}
	}
	best, bestN := theirs[0], 0
	for _, o := range ours {
		a := o.Addr().As4()
		for _, t := range theirs {
			b := t.Addr().As4()
			k := 0
			for k < 3 && a[k] == b[k] {
				k++
			}
			if k > bestN {
				best, bestN = t, k
			}
		}
	}
	return best
}
