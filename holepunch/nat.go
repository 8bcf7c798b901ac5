package holepunch

import (
	"net/netip"
)

// Firewall is a NAT class, numbered as hyperdht's FIREWALL constants, which
// are sent on the wire in noise and holepunch payloads.
type Firewall uint8

const (
	FirewallUnknown    Firewall = 0
	FirewallOpen       Firewall = 1
	FirewallConsistent Firewall = 2
	FirewallRandom     Firewall = 3
)

func (f Firewall) String() string {
	switch f {
	case FirewallUnknown:
		return "unknown"
	case FirewallOpen:
		return "open"
	case FirewallConsistent:
		return "consistent"
	case FirewallRandom:
		return "random"
	}
	return "invalid"
}

// sample counts how often one address was reported.
type sample struct {
	addr netip.AddrPort // port 0 in the host-only list
	hits int
}

// NAT classifies the NAT in front of one UDP socket from samples: each
// sample is the address a remote node saw our packet come from. It is
// hyperdht's lib/nat.js decision table:
//
//	top (host, port) seen >= 3 times                  CONSISTENT
//	top seen once                                     RANDOM
//	top seen twice, one host only, > 3 samples        RANDOM
//	top seen twice, >= 2 hosts, second seen > once    CONSISTENT
//	top seen twice, > 4 samples, none of the above    RANDOM
//	otherwise (or fewer than 3 samples)               UNKNOWN
//
// A socket that is not firewalled at all (the DHT found us reachable) is
// OPEN without sampling. The zero value is not usable; use NewNAT.
type NAT struct {
	firewalled bool
	frozen     bool
	sampled    int
	hosts      []sample // by host only, most hits first
	full       []sample // by host and port, most hits first
	from       map[netip.AddrPort]bool

	firewall  Firewall
	addresses []netip.AddrPort
}

// NewNAT returns a classifier; firewalled is whether the DHT node itself is
// firewalled (not reachable from outside).
func NewNAT(firewalled bool) *NAT {
	n := &NAT{firewalled: firewalled, from: map[netip.AddrPort]bool{}}
	if !firewalled {
		n.firewall = FirewallOpen
	}
	return n
}

// Add records that node from saw us as addr. Each node counts once, as in
// the reference, so one node cannot outvote the others.
func (n *NAT) Add(addr, from netip.AddrPort) {
	if n.from[from] {
		return
	}
	n.from[from] = true
	addSample(&n.hosts, netip.AddrPortFrom(addr.Addr(), 0))
	addSample(&n.full, addr)
	n.sampled++
	if (n.sampled >= 3 || !n.firewalled) && !n.frozen {
		n.update()
	}
}

// Sampled returns how many distinct nodes have reported our address.
func (n *NAT) Sampled() int { return n.sampled }

// Settled reports whether waiting for more samples is pointless: the class
// is known to be CONSISTENT or OPEN, or min samples have arrived.
func (n *NAT) Settled(min int) bool {
	return n.firewall == FirewallConsistent || n.firewall == FirewallOpen || n.sampled >= min
}

// Firewall returns the current classification.
func (n *NAT) Firewall() Firewall { return n.firewall }

// Addresses returns the addresses a peer should punch: for a RANDOM NAT the
// top host with port 0 (the port is unknowable), for a CONSISTENT NAT every
// address seen at least twice plus the first two in any case; nil while
// UNKNOWN. Becoming OPEN leaves the list as it was, as in the reference,
// where an open peer is reached at the DHT's own address instead.
func (n *NAT) Addresses() []netip.AddrPort { return n.addresses }

// Freeze stops samples from changing the classification, which the
// reference does once punching starts so both peers keep acting on the
// state they exchanged.
func (n *NAT) Freeze() { n.frozen = true }

// Unfreeze lets samples count again and re-evaluates them.
func (n *NAT) Unfreeze() {
	n.frozen = false
	n.updateFirewall()
	n.updateAddresses()
}

// SetFirewalled records a change of the DHT's reachability.
func (n *NAT) SetFirewalled(f bool) {
	n.firewalled = f
	if !n.frozen {
		n.update()
	}
}

func (n *NAT) update() {
	if n.firewalled && n.firewall == FirewallOpen {
		n.firewall = FirewallUnknown
	}
	n.updateFirewall()
	n.updateAddresses()
}

func (n *NAT) updateFirewall() {
	if !n.firewalled {
		n.firewall = FirewallOpen
		return
	}
	if n.sampled < 3 {
		return
	}
	switch top := n.full[0].hits; {
	case top >= 3:
		n.firewall = FirewallConsistent
	case top == 1:
		n.firewall = FirewallRandom
	case len(n.hosts) == 1 && n.sampled > 3:
		n.firewall = FirewallRandom
	case len(n.hosts) > 1 && n.full[1].hits > 1:
		n.firewall = FirewallConsistent
	case n.sampled > 4:
		n.firewall = FirewallRandom
	}
}

func (n *NAT) updateAddresses() {
	switch n.firewall {
	case FirewallUnknown:
		n.addresses = nil
	case FirewallRandom:
		n.addresses = []netip.AddrPort{n.hosts[0].addr}
	case FirewallConsistent:
		n.addresses = n.addresses[:0]
		for _, s := range n.full {
			if s.hits >= 2 || len(n.addresses) < 2 {
				n.addresses = append(n.addresses, s.addr)
			}
		}
	}
}

// addSample counts a, keeping the list ordered by hits (a stable bubble up,
// as the reference does, so ties keep first-seen order).
func addSample(list *[]sample, a netip.AddrPort) {
	s := *list
	for i := range s {
		if s[i].addr != a {
			continue
		}
		s[i].hits++
		for ; i > 0 && s[i-1].hits < s[i].hits; i-- {
			s[i-1], s[i] = s[i], s[i-1]
		}
		return
	}
	*list = append(s, sample{addr: a, hits: 1})
}
