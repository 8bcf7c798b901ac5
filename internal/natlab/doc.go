// Package natlab builds NAT topologies out of Linux network namespaces for
// keytunnel's holepunching tests, and always tears them down.
//
//	lab := natlab.New(t)                  // skips (or fails under CI=true) unless root with netns+iptables
//	boot := lab.Host(lab.Public())        // a host on the lab internet, 198.18.0.x
//	nat := lab.NAT(natlab.Consistent)     // a home router: MASQUERADE (natlab.Random: --random-fully)
//	a, b := lab.Host(nat), lab.Host(nat)  // two hosts on its LAN, 10.<k>.0.x
//	c := a.ListenUDP(0)                   // a socket inside a, usable from any goroutine
//	cmd := b.Command("node", "peer.js")   // a process inside b (ip netns exec)
//	a.SetLoss(0.3); b.DropUDP()           // link impairments
//	w := lab.Host(lab.Public(), natlab.WAN(natlab.Fiber)) // an emulated WAN link
//
// # Topology
//
// Every box is a network namespace named kt-<pid>-<lab>-<role>:
//
//	          kt-…-pub: the internet (core router, 198.18.0.1)
//	         /          |                       \
//	h1 198.18.0.2   h2 198.18.0.3      kt-…-nat1: WAN 198.18.1.1, MASQUERADE
//	                                      /                    \
//	                             h3 10.1.0.2/24          h4 10.1.0.3/24
//
// The internet is 198.18.0.0/15 (reserved for benchmarking, RFC 2544). Each
// NAT k has the LAN 10.<k>.0.0/24 with the router at 10.<k>.0.1 and its WAN at
// 198.18.1.<k>. Every link is a veth pair from a host (eth0) or NAT (wan) to
// its router's namespace; the router routes the /32 to that port and answers
// ARP for the rest of the subnet (proxy ARP). There are no bridges: all
// traffic, even between two hosts of one LAN, crosses a router's FORWARD
// chain, which is where per-link filters go. Dropping there is silent, like
// real loss; a DROP in the sending namespace's own OUTPUT chain would make
// sendto fail with EPERM instead.
//
// Public hosts have no default route and NATs route only what they know, so
// nothing in a lab can send outside it: any other destination is
// unreachable. The lab never adds an address, route or rule to the root
// namespace; iptables and sysctls are only ever applied inside lab
// namespaces.
//
// # NAT behaviour
//
// Consistent (MASQUERADE) keeps a socket's mapping for every destination and
// usually keeps its source port; a second LAN host using the same port gets
// another. Random (MASQUERADE --random-fully) draws a new port for every
// destination. Both filter inbound packets by address and port: only the
// exact remote a mapping was created for gets in. Both routers drop
// unsolicited WAN traffic in INPUT, as home routers do: otherwise a packet
// from a peer arriving before the LAN host's own first packet would be
// accepted to the router itself, leave a conntrack entry for that tuple, and
// make the later outbound packet get a different port, breaking the punch.
// There is no hairpinning.
//
// # Impairments
//
// SetLoss, SetLossIn and SetLossOut drop packets on a host's link with
// iptables' statistic match; DropUDP drops all UDP on it (loopback inside the
// host is untouched). The same methods on a NAT impair its uplink, shared by
// all its hosts but not carrying their LAN traffic.
//
// # Roaming
//
// Net.FlushConntrack empties a NAT's connection tracking table (one
// ctnetlink request, as `conntrack -F`), so that each flow's next packet
// gets a new mapping (a new port behind a Random NAT) and packets to the
// old one are dropped as unsolicited: a router reboot or a mapping that
// timed out. Host.ChangeAddr gives a host a new address on its net, as a
// device rejoining a network gets one; its sockets bound to 0.0.0.0 carry
// on from the new address.
//
// # WAN links
//
// The kernel here has no netem (nor fq or fq_codel), so delay, jitter,
// rate, queueing, reordering, duplication and MTU are emulated in user
// space. With the WAN option a host's or NAT's link is two TUN devices
// (the router's port and the host's eth0, or the NAT's wan) instead of a
// veth pair, joined by a forwarder in the test process that runs each
// direction through a Pipe, a pure state machine with the clock passed
// in:
//
//	h := lab.Host(lab.Public(), natlab.WAN(natlab.Transatlantic))
//	nat := lab.NAT(natlab.Random, natlab.WAN(natlab.Mobile)) // the NAT's uplink
//	h.WAN().Stats(natlab.Down).Sojourn.Quantile(0.95)        // queueing delay
//
// Everything else (NATs, iptables impairments on the router's side of the
// link, DHT nodes and relays on public hosts) composes with it. Profiles
// lists the named profiles (lan, fiber, transatlantic, mobile, wifi-bad).
// The forwarder waits on a timerfd, not a Go timer: the runtime rounds
// waits below a millisecond up to one. A packet longer than the link's
// MTU vanishes without an ICMP error (a black hole, as on paths whose
// ICMP is filtered).
//
// # Running code inside a host
//
// ListenUDP, ListenTCP and DialTCP open sockets inside the host; a socket
// stays in the namespace it was created in, so it works from any goroutine.
// Run(fn) runs fn on a locked OS thread that joined the namespace
// (setns) and moves back afterwards. Command and ExecPrefix run programs
// there through `ip netns exec`.
//
// # Teardown
//
// t.Cleanup closes the lab's sockets, SIGKILLs every process left in its
// namespaces and deletes them. New also sweeps kt-<pid>-… namespaces whose
// process is gone (a crashed or killed test binary).
//
// # Requirements
//
// Root, iproute2 and iptables with either backend (nft or legacy; the first
// of iptables, iptables-nft, iptables-legacy that can load the rules inside a
// namespace is used; NATLAB_IPTABLES=iptables-legacy forces one). Require
// and New skip the test with the reason when these are missing, or fail it
// when the CI environment variable is set.
//
// # Pitfalls handled
//
//   - Proxy ARP answers are delayed by up to 0.8 s by default
//     (neigh.<if>.proxy_delay); the lab sets the delay to 0 on router ports,
//     or first packets to a new neighbour get lost.
//   - A DROP in a namespace's own OUTPUT/POSTROUTING chain fails sendto with
//     EPERM; impairments therefore live in the router's FORWARD chain.
//   - Without the routers' INPUT drop, conntrack records unsolicited inbound
//     packets to the router and MASQUERADE then remaps the LAN host's later
//     packet to that peer (seen: port 5000 became 13720), so even a
//     consistent NAT would defeat a simultaneous holepunch.
//   - IPv6 is disabled and rp_filter set to 0 in every lab namespace, so the
//     host's own sysctl defaults do not leak in.
//
// HyperDHT note: the bogon module Node's hyperdht uses counts 198.18.0.0/15 as
// reserved, so a peer that is OPEN in the lab is reached at the address the
// DHT observed rather than an announced one; LAN addresses (10.x) are private
// and its LAN shortcut works. TestHyperDHTHolepunch runs the pinned Node
// reference in a lab (testnet on the internet, server and client behind
// NATs) and checks the connection is holepunched directly for
// consistent/consistent, consistent/random and random/consistent pairs.
package natlab
