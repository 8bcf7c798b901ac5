package dht

import (
	"crypto/rand"
	"net/netip"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/holepunch"
)

// remoteAddress is dht-rpc's remoteAddress(): our public address when we
// are reachable at it unsolicited (not firewalled, and the NAT kept our
// socket's port), else the zero address.
func (n *Node) remoteAddress() netip.AddrPort {
	s := n.rpc.State()
	if !s.Host.IsValid() || s.Port == 0 || s.Firewalled {
		return netip.AddrPort{}
	}
	if s.Port != n.LocalAddr().Port() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(s.Host, s.Port)
}

// natState is the main socket's NAT class and the addresses to give a
// peer for punching, in the form of hyperdht's nat.js: a consistent NAT
// gives host:port, a randomizing one host:0, an unknown one nothing.
//
// hyperdht samples a fresh pool socket per connection; we punch from the
// node's own socket, whose class dht-rpc keeps current, so a connection
// needs no sampling round of its own.
func (n *Node) natState() (wire.Firewall, []netip.AddrPort) {
	s := n.rpc.State()
	switch {
	case !s.Firewalled && s.Host.IsValid() && s.Port != 0:
		return wire.FirewallOpen, []netip.AddrPort{netip.AddrPortFrom(s.Host, s.Port)}
	case s.Firewall == rpc.FirewallConsistent || s.Firewall == rpc.FirewallOpen:
		if s.Host.IsValid() && s.Port != 0 {
			return wire.FirewallConsistent, []netip.AddrPort{netip.AddrPortFrom(s.Host, s.Port)}
		}
	case s.Firewall == rpc.FirewallRandom:
		if s.Host.IsValid() {
			return wire.FirewallRandom, []netip.AddrPort{netip.AddrPortFrom(s.Host, 0)}
		}
	}
	return wire.FirewallUnknown, nil
}

// waitNAT waits up to d for the NAT class to become known.
func (n *Node) waitNAT(done <-chan struct{}, d time.Duration) (wire.Firewall, []netip.AddrPort) {
	deadline := time.Now().Add(d)
	for {
		fw, addrs := n.natState()
		if fw != wire.FirewallUnknown || time.Now().After(deadline) {
			return fw, addrs
		}
		if !sleepCtx(done, 100*time.Millisecond) {
			return fw, addrs
		}
	}
}

// FirewallName names a NAT class as keytunnel doctor prints it.
func FirewallName(f wire.Firewall) string {
	switch f {
	case wire.FirewallOpen:
		return "open"
	case wire.FirewallConsistent:
		return "consistent"
	case wire.FirewallRandom:
		return "random"
	}
	return "unknown"
}

func punchFirewall(f wire.Firewall) holepunch.Firewall {
	switch f {
	case wire.FirewallOpen:
		return holepunch.FirewallOpen
	case wire.FirewallConsistent:
		return holepunch.FirewallConsistent
	case wire.FirewallRandom:
		return holepunch.FirewallRandom
	}
	return holepunch.FirewallUnknown
}

func random32() [32]byte {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("dht: crypto/rand failed: " + err.Error())
	}
	return b
}

// isBogon reports addresses hyperdht's connect skips when it picks a
// server address from the payload (bogon: private, loopback, link-local,
// reserved).
func isBogon(a netip.Addr) bool {
	return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() ||
		a.IsMulticast() || !a.IsGlobalUnicast()
}

func sameAddr(a, b netip.AddrPort) bool {
	return a.Addr().Unmap() == b.Addr().Unmap() && a.Port() == b.Port()
}

// updateRemotes is the peer's new address list for punching
// (Holepuncher.updateRemote): an address is verified when the peer echoed
// our token from its host (echoed, from), or when that host was verified
// in an earlier round.
func updateRemotes(addrs []netip.AddrPort, prev []holepunch.Remote, echoed bool, from netip.Addr) []holepunch.Remote {
	out := make([]holepunch.Remote, 0, len(addrs))
	for _, a := range addrs {
		v := echoed && a.Addr() == from
		for _, o := range prev {
			if o.Verified && o.Addr.Addr() == a.Addr() {
				v = true
			}
		}
		out = append(out, holepunch.Remote{Addr: a, Verified: v})
	}
	return out
}
