package natlab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Kind says what a Net is: the public internet or a NAT of some behaviour.
type Kind int

const (
	// Public is the lab's internet: hosts on it have public addresses and
	// no firewall.
	Public Kind = iota
	// Consistent is a NAT doing `MASQUERADE`: a socket keeps its mapped
	// port for every destination (endpoint-independent mapping, and the
	// source port is kept when it is free), inbound packets are accepted
	// only from a destination the socket sent to (address- and
	// port-dependent filtering). HyperDHT calls it CONSISTENT.
	Consistent
	// Random is a NAT doing `MASQUERADE --random-fully`: every destination
	// gets a fresh random mapped port. HyperDHT calls it RANDOM.
	Random
)

func (k Kind) String() string {
	switch k {
	case Public:
		return "public"
	case Consistent:
		return "consistent"
	case Random:
		return "random"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Address plan. Everything lives inside namespaces the lab creates; the root
// namespace gets no address, route or rule.
var (
	// PublicPrefix is the lab internet: 198.18.0.0/15, reserved for
	// benchmarking (RFC 2544), never routed on the real internet. Public
	// hosts get 198.18.0.x, NAT routers' WAN sides get 198.18.1.x, the
	// core router answers on 198.18.0.1.
	PublicPrefix = netip.MustParsePrefix("198.18.0.0/15")
	coreAddr     = netip.MustParseAddr("198.18.0.1")
)

var (
	labSeq atomic.Int64

	probeOnce sync.Once
	probeErr  error  // why the lab cannot run here, if it cannot
	iptBin    string // iptables binary that works in a namespace
)

// Require skips the test when the NAT lab cannot run here (not root, no
// network namespaces, no working iptables), with a message saying why.
// Under CI (the CI environment variable set) it fails the test instead.
// New calls it; a test may call it first to skip before other setup.
func Require(t testing.TB) {
	t.Helper()
	probeOnce.Do(probe)
	if probeErr == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("natlab: NAT lab cannot run in CI: %v", probeErr)
	}
	t.Skipf("natlab: NAT lab test skipped outside CI: %v (run as root on Linux with iproute2 and iptables)", probeErr)
}

// probe checks the environment once per process: root, iproute2, a network
// namespace can be created, and an iptables backend (nft or legacy) can load
// MASQUERADE --random-fully, statistic and conntrack rules inside it. It also
// sweeps namespaces left behind by crashed natlab runs.
func probe() {
	if os.Geteuid() != 0 {
		probeErr = errors.New("not running as root")
		return
	}
	if _, err := exec.LookPath("ip"); err != nil {
		probeErr = errors.New("ip (iproute2) is not on PATH")
		return
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		probeErr = errors.New("kernel has no network namespaces")
		return
	}
	sweep()
	ns := fmt.Sprintf("%s%d-probe", prefix, os.Getpid())
	if _, err := run("", "ip", "netns", "add", ns); err != nil {
		probeErr = fmt.Errorf("cannot create a network namespace: %v", err)
		return
	}
	defer deleteNetns(ns)
	rules := `*nat
-A POSTROUTING -o lo -j MASQUERADE --random-fully
COMMIT
*filter
:probe - [0:0]
-A probe -m statistic --mode random --probability 0.5 -j DROP
-A probe -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
COMMIT
`
	var errs []string
	bins := []string{"iptables", "iptables-nft", "iptables-legacy"}
	if b := os.Getenv("NATLAB_IPTABLES"); b != "" {
		bins = []string{b} // force a backend, e.g. iptables-legacy
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin + "-restore"); err != nil {
			errs = append(errs, bin+"-restore not on PATH")
			continue
		}
		if _, err := runIn(ns, rules, bin+"-restore"); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		iptBin = bin
		return
	}
	probeErr = fmt.Errorf("no iptables backend works inside a namespace: %s", strings.Join(errs, "; "))
}

// IptablesBackend is the iptables binary the lab uses ("iptables",
// "iptables-nft" or "iptables-legacy"), after Require or New succeeded.
func IptablesBackend() string { return iptBin }

// Lab is a set of network namespaces wired into an internet with NATs. It
// is torn down when the test that created it ends, pass or fail.
type Lab struct {
	t    testing.TB
	name string // kt-<pid>-<n>

	mu      sync.Mutex
	nss     []string // created namespaces, in creation order
	closers []io.Closer
	nats    int
	pubs    int // public hosts
	hosts   int // all hosts
	public  *Net
}

// New builds an empty lab (just the public internet) for the test and
// registers its teardown with t.Cleanup. It skips or fails the test as
// Require does when the lab cannot run here.
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	l := &Lab{t: t, name: fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), labSeq.Add(1))}
	t.Cleanup(l.close)
	core := l.addNetns("pub")
	l.must(writeSysctl(core, "ipv4.ip_forward", "1"))
	l.must(l.ip(core, "addr add "+coreAddr.String()+"/32 dev lo"))
	l.public = &Net{lab: l, kind: Public, ns: core, addr: coreAddr}
	return l
}

func (l *Lab) must(err error) {
	if err != nil {
		l.t.Helper()
		l.t.Fatalf("natlab: %v", err)
	}
}

// ip runs `ip -n ns -batch -` with one command per line.
func (l *Lab) ip(ns string, lines ...string) error {
	_, err := run(strings.Join(lines, "\n")+"\n", "ip", "-n", ns, "-batch", "-")
	return err
}

// iptables loads rules with `iptables-restore --noflush` inside ns.
func (l *Lab) iptables(ns, rules string) error {
	_, err := runIn(ns, rules, iptBin+"-restore", "--noflush")
	return err
}

// addNetns creates namespace <lab>-<role> with loopback up, IPv6 off (the
// lab is IPv4 only; this also keeps link-local chatter out) and rp_filter
// off (the host's default may be strict and namespaces may inherit it).
func (l *Lab) addNetns(role string) string {
	l.t.Helper()
	ns := l.name + "-" + role
	if _, err := run("", "ip", "netns", "add", ns); err != nil {
		l.t.Fatalf("natlab: %v", err)
	}
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	l.must(l.ip(ns, "link set lo up"))
	l.must(writeSysctl(ns,
		"ipv6.conf.all.disable_ipv6", "1",
		"ipv6.conf.default.disable_ipv6", "1",
		"ipv4.conf.all.rp_filter", "0",
		"ipv4.conf.default.rp_filter", "0",
	))
	return ns
}

func (l *Lab) track(c io.Closer) {
	l.mu.Lock()
	l.closers = append(l.closers, c)
	l.mu.Unlock()
}

// close tears the lab down: closes sockets it opened, kills processes left in
// its namespaces and deletes the namespaces, newest first.
func (l *Lab) close() {
	l.mu.Lock()
	closers, nss := l.closers, l.nss
	l.closers, l.nss = nil, nil
	l.mu.Unlock()
	for _, c := range closers {
		_ = c.Close()
	}
	var errs []string
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNetns(nss[i]); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		l.t.Errorf("natlab: teardown: %s", strings.Join(errs, "; "))
	}
}

// Name is the lab's namespace prefix, kt-<pid>-<n>.
func (l *Lab) Name() string { return l.name }

// Public is the lab's internet, where bootstrap nodes and open hosts live.
func (l *Lab) Public() *Net { return l.public }

// NAT adds a router joining a new private LAN (10.<k>.0.0/24, router at
// 10.<k>.0.1) to the public internet. Its WAN side has a public address
// (198.18.1.<k>) and masquerades everything the LAN sends out. Like a home
// router it drops inbound packets on its WAN side that belong to no
// connection (so unsolicited packets never reach the LAN, and never leave a
// conntrack entry that would steal a mapping a holepunch needs), and it does
// not hairpin: LAN hosts reach each other by their LAN addresses.
//
// With the WAN option its uplink is an emulated WAN link (see Net.WAN).
func (l *Lab) NAT(kind Kind, opts ...Option) *Net {
	l.t.Helper()
	var o attachOpts
	for _, opt := range opts {
		opt(&o)
	}
	if kind != Consistent && kind != Random {
		l.t.Fatalf("natlab: NAT(%v): want Consistent or Random", kind)
	}
	l.mu.Lock()
	l.nats++
	k := l.nats
	l.mu.Unlock()
	if k > 250 {
		l.t.Fatalf("natlab: too many NATs")
	}
	wanAddr := netip.AddrFrom4([4]byte{198, 18, 1, byte(k)})
	lanAddr := netip.AddrFrom4([4]byte{10, byte(k), 0, 1})
	ns := l.addNetns(fmt.Sprintf("nat%d", k))
	port := fmt.Sprintf("n%d", k)
	var wan *Link
	if o.wan != nil {
		wan = l.attachWAN(l.public.ns, port, ns, "wan", wanAddr, PublicPrefix.Bits(), *o.wan)
	} else {
		l.attach(l.public.ns, port, ns, "wan", wanAddr, PublicPrefix.Bits())
	}
	l.must(writeSysctl(ns, "ipv4.ip_forward", "1"))
	l.must(l.ip(ns, "addr add "+lanAddr.String()+"/32 dev lo"))
	masq := "-A POSTROUTING -o wan -j MASQUERADE"
	if kind == Random {
		masq += " --random-fully"
	}
	l.must(l.iptables(ns, `*nat
`+masq+`
COMMIT
*filter
-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -i wan -j DROP
-A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -i wan -j DROP
COMMIT
`))
	return &Net{lab: l, kind: kind, ns: ns, addr: wanAddr, lan: lanAddr, emu: wan,
		wanLink: link{lab: l, rns: l.public.ns, port: port}}
}

// attach wires a new veth link between the router namespace rns (interface
// port) and namespace ns (interface ifname, address addr/bits). The router
// routes addr/32 to the port and answers ARP for the rest of the subnet
// (proxy ARP), so every link is point to point: filter rules on the router's
// side of a link see every packet of it, and a drop there is silent for the
// sender (a drop in the sender's own OUTPUT chain would fail its send with
// EPERM instead of losing the packet).
func (l *Lab) attach(rns, port, ns, ifname string, addr netip.Addr, bits int) {
	l.t.Helper()
	l.must(l.ip(rns,
		fmt.Sprintf("link add %s type veth peer name %s netns %s", port, ifname, ns),
		"link set "+port+" up",
		fmt.Sprintf("route add %s/32 dev %s", addr, port),
	))
	// proxy_delay: the kernel delays proxy ARP answers by up to 0.8 s by
	// default, long enough to lose first packets and time out tests.
	l.must(writeSysctl(rns,
		"ipv4.conf."+port+".proxy_arp", "1",
		"ipv4.neigh."+port+".proxy_delay", "0",
	))
	l.must(l.ip(ns,
		fmt.Sprintf("addr add %s/%d dev %s", addr, bits, ifname),
		"link set "+ifname+" up",
	))
}

// Net is a place hosts attach to: the public internet or a NAT's LAN. Each
// is a router namespace.
type Net struct {
	lab   *Lab
	kind  Kind
	ns    string
	addr  netip.Addr // public: core router; NAT: WAN address
	lan   netip.Addr // NAT: router's LAN address
	hosts int

	wanLink link  // NAT: its link to the internet
	emu     *Link // NAT: its uplink's WAN emulation, if any
}

// WAN is the emulated WAN link of a NAT made with the WAN option (Up is
// towards the internet), or nil.
func (n *Net) WAN() *Link { return n.emu }

// Kind says whether n is the internet or which NAT.
func (n *Net) Kind() Kind { return n.kind }

// Addr is the NAT's public (WAN) address, the source address the public side
// sees for its hosts; for the public internet, the core router's address.
func (n *Net) Addr() netip.Addr { return n.addr }

// Gateway is the router's address as seen from n's hosts: the core router
// for the internet, 10.<k>.0.1 for a NAT.
func (n *Net) Gateway() netip.Addr {
	if n.kind == Public {
		return n.addr
	}
	return n.lan
}

// Namespace is the name of the router's network namespace.
func (n *Net) Namespace() string { return n.ns }

// Host adds a host to n: its own namespace with one interface, eth0, linked
// to n's router. On the internet it gets a public address (198.18.0.x/15)
// and no default route; behind a NAT it gets 10.<k>.0.x/24 with a default
// route through the NAT. Either way nothing outside the lab is reachable.
// With the WAN option the link is an emulated WAN link (see Host.WAN).
func (l *Lab) Host(n *Net, opts ...Option) *Host {
	l.t.Helper()
	var o attachOpts
	for _, opt := range opts {
		opt(&o)
	}
	if n == nil || n.lab != l {
		l.t.Fatalf("natlab: Host: net belongs to another lab")
	}
	l.mu.Lock()
	l.hosts++
	id := l.hosts
	l.mu.Unlock()
	addr, bits := l.nextAddr(n)
	ns := l.addNetns(fmt.Sprintf("h%d", id))
	port := fmt.Sprintf("h%d", id)
	var wan *Link
	if o.wan != nil {
		wan = l.attachWAN(n.ns, port, ns, "eth0", addr, bits, *o.wan)
	} else {
		l.attach(n.ns, port, ns, "eth0", addr, bits)
	}
	if n.kind != Public {
		l.must(l.ip(ns, "route add default via "+n.lan.String()))
	}
	return &Host{lab: l, net: n, ns: ns, port: port, addr: addr, emu: wan,
		link: link{lab: l, rns: n.ns, port: port}}
}

// nextAddr allocates a host address on n, with its prefix length: the
// next 198.18.0.x/15 on the internet, the next 10.<k>.0.x/24 behind NAT k.
func (l *Lab) nextAddr(n *Net) (netip.Addr, int) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if n.kind == Public {
		l.pubs++
		if l.pubs > 250 {
			l.t.Fatalf("natlab: too many public hosts")
		}
		return netip.AddrFrom4([4]byte{198, 18, 0, byte(1 + l.pubs)}), PublicPrefix.Bits()
	}
	n.hosts++
	if n.hosts > 250 {
		l.t.Fatalf("natlab: too many hosts behind one NAT")
	}
	lan := n.lan.As4()
	lan[3] = byte(1 + n.hosts)
	return netip.AddrFrom4(lan), 24
}

// Hosts adds count hosts to n.
func (l *Lab) Hosts(n *Net, count int) []*Host {
	l.t.Helper()
	hs := make([]*Host, count)
	for i := range hs {
		hs[i] = l.Host(n)
	}
	return hs
}

// Host is a machine in the lab: a network namespace with one interface.
type Host struct {
	lab  *Lab
	net  *Net
	ns   string
	port string // the router's interface facing this host
	addr netip.Addr
	link link
	emu  *Link // WAN emulation of its link, if any
}

// WAN is the emulated WAN link of a host made with the WAN option (Up is
// from the host), or nil.
func (h *Host) WAN() *Link { return h.emu }

// Addr is the host's own address (public, or 10.<k>.0.x behind a NAT).
func (h *Host) Addr() netip.Addr { return h.addr }

// AddrPort is Addr with a port.
func (h *Host) AddrPort(port uint16) netip.AddrPort { return netip.AddrPortFrom(h.addr, port) }

// Net is where the host is attached.
func (h *Host) Net() *Net { return h.net }

// PublicAddr is the address the internet sees the host's packets come from:
// its own address on the internet, its NAT's address behind one.
func (h *Host) PublicAddr() netip.Addr {
	if h.net.kind == Public {
		return h.addr
	}
	return h.net.addr
}

// Namespace is the name of the host's network namespace (for `ip netns exec`).
func (h *Host) Namespace() string { return h.ns }

// Run runs fn on an OS thread inside the host's namespace and returns its
// error. Sockets fn opens belong to the namespace for good and may then be
// used anywhere; goroutines fn starts do not run in the namespace.
func (h *Host) Run(fn func() error) error { return inNetns(h.ns, fn) }

// ListenUDP opens a UDP socket bound to 0.0.0.0:port inside the host (port 0
// picks a free port). The lab closes it when the test ends. It fails the
// test on error, so call it from the test goroutine.
func (h *Host) ListenUDP(port uint16) *net.UDPConn {
	h.lab.t.Helper()
	var c *net.UDPConn
	h.lab.must(h.Run(func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
		return err
	}))
	h.lab.track(c)
	return c
}

// ListenTCP opens a TCP listener on 0.0.0.0:port inside the host, closed when
// the test ends. It fails the test on error.
func (h *Host) ListenTCP(port uint16) *net.TCPListener {
	h.lab.t.Helper()
	var ln *net.TCPListener
	h.lab.must(h.Run(func() (err error) {
		ln, err = net.ListenTCP("tcp4", &net.TCPAddr{Port: int(port)})
		return err
	}))
	h.lab.track(ln)
	return ln
}

// DialTCP connects from inside the host to addr, giving up after timeout.
// The connection is closed when the test ends if it is still open.
func (h *Host) DialTCP(addr netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := h.Run(func() (err error) {
		d := net.Dialer{Timeout: timeout}
		c, err = d.Dial("tcp4", addr.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	h.lab.track(c)
	return c.(*net.TCPConn), nil
}

// Command returns a command that runs name with args inside the host's
// namespace (through `ip netns exec`), e.g. a Node.js peer. The process is
// killed when the test ends if it is still running.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append(h.ExecPrefix()[1:], append([]string{name}, args...)...)...)
}

// ExecPrefix is the argv prefix that runs a program inside the host:
// ip netns exec <namespace>. Helpers that build their own exec.Cmd prepend it.
func (h *Host) ExecPrefix() []string { return []string{"ip", "netns", "exec", h.ns} }

// SetLoss drops each packet to and from the host with probability p, on the
// host's link (in its router's namespace, so a dropped packet just vanishes).
// p = 0 removes the loss.
func (h *Host) SetLoss(p float64) {
	h.lab.t.Helper()
	h.link.set(func() { h.link.lossIn, h.link.lossOut = p, p })
}

// SetLossIn drops packets towards the host with probability p.
func (h *Host) SetLossIn(p float64) { h.lab.t.Helper(); h.link.set(func() { h.link.lossIn = p }) }

// SetLossOut drops packets sent by the host with probability p.
func (h *Host) SetLossOut(p float64) { h.lab.t.Helper(); h.link.set(func() { h.link.lossOut = p }) }

// DropUDP silently drops every UDP packet to or from the host on its link
// (the host can still use UDP over its own loopback); TCP and ICMP pass.
func (h *Host) DropUDP() { h.lab.t.Helper(); h.link.set(func() { h.link.dropUDP = true }) }

// AllowUDP undoes DropUDP.
func (h *Host) AllowUDP() { h.lab.t.Helper(); h.link.set(func() { h.link.dropUDP = false }) }

// SetLoss drops each packet crossing a NAT's WAN link (the uplink all its
// hosts share) with probability p, in both directions.
func (n *Net) SetLoss(p float64) {
	n.lab.t.Helper()
	n.wan().set(func() { n.wanLink.lossIn, n.wanLink.lossOut = p, p })
}

// SetLossIn drops packets from the internet towards a NAT with probability p.
func (n *Net) SetLossIn(p float64) { n.lab.t.Helper(); n.wan().set(func() { n.wanLink.lossIn = p }) }

// SetLossOut drops packets from a NAT to the internet with probability p.
func (n *Net) SetLossOut(p float64) { n.lab.t.Helper(); n.wan().set(func() { n.wanLink.lossOut = p }) }

// DropUDP drops every UDP packet on a NAT's WAN link, like a network that
// blocks UDP; its hosts still reach each other over the LAN.
func (n *Net) DropUDP() { n.lab.t.Helper(); n.wan().set(func() { n.wanLink.dropUDP = true }) }

// BlockUDPWith drops UDP between a NAT's hosts and peer (a public host's
// or another NAT's address) on the NAT's WAN link, as a path where no
// punch gets through; everything else passes.
func (n *Net) BlockUDPWith(peer netip.Addr) {
	n.lab.t.Helper()
	n.wan().set(func() {
		if !slices.Contains(n.wanLink.blockedUDP, peer) {
			n.wanLink.blockedUDP = append(n.wanLink.blockedUDP, peer)
		}
	})
}

// UnblockUDPWith undoes BlockUDPWith.
func (n *Net) UnblockUDPWith(peer netip.Addr) {
	n.lab.t.Helper()
	n.wan().set(func() {
		n.wanLink.blockedUDP = slices.DeleteFunc(n.wanLink.blockedUDP, func(a netip.Addr) bool { return a == peer })
	})
}

// AllowUDP undoes DropUDP.
func (n *Net) AllowUDP() { n.lab.t.Helper(); n.wan().set(func() { n.wanLink.dropUDP = false }) }

func (n *Net) wan() *link {
	if n.kind == Public {
		n.lab.t.Helper()
		n.lab.t.Fatalf("natlab: the public internet has no link to impair; impair a host or a NAT")
	}
	return &n.wanLink
}

// link is the router side of a veth link, where its filters go.
type link struct {
	lab  *Lab
	rns  string // router namespace
	port string // router's interface

	mu              sync.Mutex
	chains          bool
	lossIn, lossOut float64 // in: towards the far end; out: from it
	dropUDP         bool
	blockedUDP      []netip.Addr // UDP to and from these is dropped
}

// set applies change and rewrites the link's two filter chains in the
// router's namespace: kt-in-<port> (packets towards the far end) and
// kt-out-<port> (from it), jumped to first thing in FORWARD.
func (k *link) set(change func()) {
	k.lab.t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	change()
	for _, p := range []float64{k.lossIn, k.lossOut} {
		if p < 0 || p > 1 {
			k.lab.t.Fatalf("natlab: loss probability %v not in [0, 1]", p)
		}
	}
	in, out := "kt-in-"+k.port, "kt-out-"+k.port
	var b strings.Builder
	b.WriteString("*filter\n")
	if !k.chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", in, out)
		// First in FORWARD, before a NAT's own rules.
		fmt.Fprintf(&b, "-I FORWARD 1 -o %s -j %s\n-I FORWARD 1 -i %s -j %s\n", k.port, in, k.port, out)
	}
	fmt.Fprintf(&b, "-F %s\n-F %s\n", in, out)
	for _, c := range []struct {
		chain string
		p     float64
	}{{in, k.lossIn}, {out, k.lossOut}} {
		if k.dropUDP {
			fmt.Fprintf(&b, "-A %s -p udp -j DROP\n", c.chain)
		}
		for _, a := range k.blockedUDP {
			dir := "-s" // towards the far end: from the blocked peer
			if c.chain == out {
				dir = "-d"
			}
			fmt.Fprintf(&b, "-A %s -p udp %s %s -j DROP\n", c.chain, dir, a)
		}
		if c.p > 0 {
			fmt.Fprintf(&b, "-A %s -m statistic --mode random --probability %.6f -j DROP\n", c.chain, c.p)
		}
	}
	b.WriteString("COMMIT\n")
	k.lab.must(k.lab.iptables(k.rns, b.String()))
	k.chains = true
}
