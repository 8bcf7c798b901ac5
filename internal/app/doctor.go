package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
	"github.com/keytunnel/keytunnel/tunnel"
)

// DoctorOptions are doctor's arguments.
type DoctorOptions struct {
	Remote string     // a service's public key to test the path to; empty: none
	Key    KeyOptions // our identity (for the service's allow list)
	// Sample is the throughput sample's size each way; zero means 4 MiB.
	Sample int
}

// EvDoctor is one check of doctor: check names it, ok says whether it
// passed, message is its line.
const EvDoctor = "doctor"

// Bounds of doctor's steps, so that it ends in bounded time when UDP is
// blocked or the peer is gone.
const (
	doctorPingWait = 6 * time.Second  // every bootstrap node's PING (with dht-rpc's retries)
	doctorJoinWait = 10 * time.Second // the join, once a node answered
	doctorNATWait  = 10 * time.Second // dht-rpc's NAT classification
	doctorFindWait = 15 * time.Second // FIND_PEER
	doctorDialWait = 30 * time.Second // connect, pings and the throughput sample
	doctorPings    = 5
)

// doctor prints the checks' lines and remembers the first problem.
type doctor struct {
	env     *Env
	problem error
}

func (d *doctor) say(check string, ok bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.env.out.emit(check+": "+msg, Event{Event: EvDoctor, Check: check, OK: &ok, Message: msg})
}

// fail reports a failed check; the first failure's hint (one line: what
// to do) becomes doctor's error.
func (d *doctor) fail(check, hint string, format string, args ...any) {
	d.say(check, false, format, args...)
	if d.problem == nil {
		d.problem = errors.New(hint)
	}
}

// Doctor tests what keytunnel needs from this host and the network, as a
// connectivity test: the bootstrap nodes (RTT each), whether UDP works,
// this host's NAT as the DHT sees it and, with o.Remote, the path to that
// service (lookup, connect, direct or relayed and why, RTT, throughput).
// Each check prints one line; the first failed check's advice is the
// error, so that the exit status says whether all passed.
func Doctor(ctx context.Context, env *Env, o DoctorOptions) error {
	env.init()
	d := &doctor{env: env}
	var remote key.PublicKey
	if o.Remote != "" {
		// KEY/NAME: the path is the key's, whichever service is named.
		ks, _, err := splitService(o.Remote)
		if err != nil {
			return err
		}
		if remote, err = parsePublicKey(ks); err != nil {
			return err
		}
	}
	kp, err := env.loadKey(o.Key)
	if err != nil {
		return err
	}
	if kp.Public.IsZero() {
		kp, _ = key.Generate(nil)
	}
	if o.Sample <= 0 {
		o.Sample = 4 << 20
	}
	if env.OpenNetwork != nil {
		// --relay: the DHT is reached over TCP through a dht-relay.
		start := time.Now()
		nw, err := env.OpenNetwork(ctx, env)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.fail("dht-relay", "the dht-relay does not answer: check its URL and that it runs (keytunnel dht-relay)", "%v", err)
			return d.problem
		}
		defer nw.Close()
		d.say("dht-relay", true, "reached in %v; UDP and NAT checks do not apply through it", ms(time.Since(start)))
		if !remote.IsZero() {
			d.checkPeer(ctx, nw.Dialer(kp, nil), nil, remote, o.Sample, nil)
		}
		return d.end()
	}

	list := env.Bootstrap
	if list == nil {
		// A public node whose name does not resolve is a finding of
		// its own (one bootstrap line), not a usage error.
		list = wire.BootstrapNodes
	} else if err := stack.CheckBootstrap(ctx, list); err != nil {
		return err
	}
	n, err := stack.Open(stack.Options{
		Bootstrap: env.Bootstrap, Host: env.Host, Mode: rpc.Adaptive,
		KeyPair: kp, RelayThrough: env.RelayThrough, Logger: env.logger,
	})
	if err != nil {
		return err
	}
	defer n.Close()

	seen, tried := d.pingBootstrap(ctx, n, list)
	if ctx.Err() != nil {
		return nil
	}
	if len(seen) == 0 {
		d.fail("udp", "UDP looks blocked here: use a dht-relay, keytunnel --relay tcp://HOST:49443 (see keytunnel help dht-relay), or allow outgoing UDP",
			"no bootstrap node answered over UDP in %v: UDP is blocked on this network (or every bootstrap node is down)", waited(tried))
		if !remote.IsZero() {
			d.say("peer", false, "not tested: no DHT")
		}
		return d.end()
	}
	d.say("udp", true, "works (%d of %d bootstrap nodes answered)", countAnswered(seen), len(seen))

	jctx, cancel := context.WithTimeout(ctx, doctorJoinWait)
	err = n.WaitReady(jctx)
	cancel()
	if err != nil || n.State().Nodes == 0 {
		if ctx.Err() != nil {
			return nil
		}
		d.fail("dht", "the DHT's nodes do not answer past the bootstrap nodes: UDP may be filtered; try --relay tcp://HOST:49443",
			"could not join within %v (routing table: %d nodes)", doctorJoinWait, n.State().Nodes)
		return d.end()
	}
	d.say("dht", true, "joined (%d nodes in the routing table)", n.State().Nodes)
	d.checkNAT(ctx, n, seen)

	if !remote.IsZero() {
		var rep dht.DialReport
		dialer := reportDialer{n: n.Node, opts: dht.DialOptions{KeyPair: kp, RelayThrough: dht.RelayKeys(env.RelayThrough...)}, first: &rep}
		d.checkPeer(ctx, dialer, n.Node, remote, o.Sample, &rep)
	}
	return d.end()
}

func (d *doctor) end() error {
	if d.problem == nil {
		d.env.out.text("doctor: all checks passed")
	}
	return d.problem
}

// answer is one bootstrap node's reply to our PING.
type answer struct {
	entry string
	addr  netip.AddrPort
	rtt   time.Duration
	to    netip.AddrPort // us, as it saw us
	took  time.Duration  // until the answer, or until the PING gave up
	err   error
}

func countAnswered(as []answer) int {
	n := 0
	for _, a := range as {
		if a.err == nil {
			n++
		}
	}
	return n
}

// pingBootstrap pings every bootstrap node at once and prints each one's
// round trip. It returns the answers (nil when no node answered) and
// every try.
func (d *doctor) pingBootstrap(ctx context.Context, n *stack.Node, list []string) (answered, tried []answer) {
	ctx, cancel := context.WithTimeout(ctx, doctorPingWait)
	defer cancel()
	out := make([]answer, len(list))
	var wg sync.WaitGroup
	for i, e := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := answer{entry: e}
			start := time.Now()
			defer func() { a.took = time.Since(start); out[i] = a }()
			a.addr, a.err = resolveEntry(ctx, e)
			if a.err == nil {
				sent := time.Now()
				var r *rpc.Response
				r, a.err = n.RPC().Ping(ctx, a.addr)
				if a.err == nil {
					a.rtt, a.to = time.Since(sent), r.To
					if r.RTT > 0 {
						a.rtt = r.RTT
					}
				}
			}
		}()
	}
	wg.Wait()
	ok := false
	for _, a := range out {
		name := a.entry
		if a.addr.IsValid() && a.addr.String() != a.entry {
			name += " (" + a.addr.String() + ")"
		}
		switch {
		case a.err == nil:
			ok = true
			d.say("bootstrap", true, "%s answered in %v, sees this host as %v", name, ms(a.rtt), a.to)
		case errors.Is(a.err, context.DeadlineExceeded) || errors.Is(a.err, rpc.ErrTimeout):
			d.say("bootstrap", false, "%s: no answer (gave up after %v)", name, a.took.Round(100*time.Millisecond))
		default:
			d.say("bootstrap", false, "%s: %v", name, a.err)
		}
	}
	if !ok {
		return nil, out
	}
	return out, out
}

// waited is how long the longest of as took.
func waited(as []answer) time.Duration {
	var w time.Duration
	for _, a := range as {
		w = max(w, a.took)
	}
	return w.Round(100 * time.Millisecond)
}

// resolveEntry turns a bootstrap entry (HOST:PORT, or hyperdht's
// SUGGESTED-IP@HOST:PORT) into an IPv4 address.
func resolveEntry(ctx context.Context, e string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(e, ':')
	port, err := strconv.ParseUint(e[i+1:], 10, 16)
	if i < 0 || err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not HOST:PORT", e)
	}
	host := e[:i]
	if sugg, h, ok := strings.Cut(host, "@"); ok {
		if ip, err := netip.ParseAddr(sugg); err == nil && ip.Is4() {
			return netip.AddrPortFrom(ip, uint16(port)), nil
		}
		host = h
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("cannot resolve %s: %v", host, err)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), nil
}

// checkNAT waits for dht-rpc's NAT classification and prints it, with the
// ports that nodes saw us at as the evidence.
func (d *doctor) checkNAT(ctx context.Context, n *stack.Node, boot []answer) {
	deadline := time.Now().Add(doctorNATWait)
	s := n.State()
	for s.Firewall == rpc.FirewallUnknown && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		s = n.State()
	}
	ports := d.samplePorts(ctx, n, boot)
	fw := s.Firewall
	if fw == rpc.FirewallConsistent && isLocalAddr(s.Host) {
		// The DHT sees one of our own addresses: no NAT in between.
		// (dht-rpc calls an ephemeral node consistent until its
		// firewall check proves it reachable.)
		fw = rpc.FirewallOpen
	}
	switch fw {
	case rpc.FirewallOpen:
		d.say("nat", true, "none: the DHT sees this host's own address %v (%s); peers reach it directly unless a firewall drops inbound UDP", netip.AddrPortFrom(s.Host, s.Port), ports)
	case rpc.FirewallConsistent:
		d.say("nat", true, "consistent: the DHT sees this host at %v (%s); holepunching works with peers behind consistent and randomizing NATs",
			netip.AddrPortFrom(s.Host, s.Port), ports)
	case rpc.FirewallRandom:
		d.say("nat", true, "randomizing: the DHT sees this host at %v with a new port per peer (%s); holepunching works only with peers that are open or behind consistent NATs; "+
			"for peers behind randomizing NATs give both sides --relay-through KEY of a keytunnel relay", s.Host, ports)
	default:
		d.fail("nat", "the DHT could not classify this host's NAT: UDP answers are unreliable here; if connections fail, use --relay-through KEY or --relay URL",
			"unknown after %v (%s)", doctorNATWait, ports)
	}
}

// isLocalAddr says whether a is an address of one of this host's interfaces.
func isLocalAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

// samplePorts pings a few DHT nodes from the socket connections punch from
// and says which ports they saw us at: one port for all is a consistent
// NAT (or none), a port per node a randomizing one.
func (d *doctor) samplePorts(ctx context.Context, n *stack.Node, boot []answer) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	addrs, _ := n.RPC().Nodes(ctx, 8)
	var mu sync.Mutex
	ports := map[uint16]bool{}
	count := 0
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := n.RPC().Ping(ctx, a); err == nil {
				mu.Lock()
				ports[r.To.Port()] = true
				count++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if count == 0 {
		for _, b := range boot {
			if b.err == nil {
				ports[b.to.Port()] = true
				count++
			}
		}
	}
	switch {
	case count == 0:
		return "no node answered a sample"
	case len(ports) == 1:
		for p := range ports {
			return fmt.Sprintf("%d of %d sampled nodes saw port %d", count, count, p)
		}
	}
	list := make([]int, 0, len(ports))
	for p := range ports {
		list = append(list, int(p))
	}
	sort.Ints(list)
	return fmt.Sprintf("%d sampled nodes saw %d ports: %v", count, len(ports), list)
}

// reportDialer dials with a DialReport, keeping the first dial's.
type reportDialer struct {
	n     *dht.Node
	opts  dht.DialOptions
	first *dht.DialReport
}

func (r reportDialer) Dial(ctx context.Context, remote key.PublicKey) (tunnel.PeerConn, error) {
	opts := r.opts
	var rep dht.DialReport
	opts.Report = &rep
	c, err := r.n.Dial(ctx, remote, &opts)
	if err != nil {
		return nil, err
	}
	if r.first.Path == "" {
		*r.first = rep
	}
	return c, nil
}

// checkPeer finds remote on the DHT (n nil: through a dht-relay, which
// cannot look up), connects, and reports the path, RTT and throughput.
func (d *doctor) checkPeer(ctx context.Context, dialer tunnel.Dialer, n *dht.Node, remote key.PublicKey, sample int, rep *dht.DialReport) {
	short := remote.String()[:8] + "…"
	if n != nil {
		fctx, cancel := context.WithTimeout(ctx, doctorFindWait)
		start := time.Now()
		found := 0
		st := n.FindPeer(fctx, remote)
		for r := range st.All(fctx) {
			if r.Peer.PublicKey == remote {
				found++
			}
		}
		st.Close()
		cancel()
		if ctx.Err() != nil {
			return
		}
		if found == 0 {
			d.fail("peer", "no DHT node holds an announce of "+short+": check that its expose runs and prints this key, and that you copied the whole key",
				"%s is not announced on the DHT (looked up in %v)", short, ms(time.Since(start)))
			return
		}
		d.say("peer", true, "%s is announced on %d DHT nodes (looked up in %v)", short, found, ms(time.Since(start)))
	}
	cctx, cancel := context.WithTimeout(ctx, doctorDialWait)
	defer cancel()
	start := time.Now()
	res, err := tunnel.Check(cctx, dialer, remote, doctorPings, sample)
	took := time.Since(start)
	if err != nil && len(res.RTTs) == 0 {
		if ctx.Err() != nil {
			return
		}
		hint := "the path to " + short + " failed: " + connectAdvice(err)
		d.fail("connect", hint, "cannot connect to %s after %v: %v", short, ms(took), err)
		return
	}
	if rep != nil && rep.Path != "" {
		d.say("connect", true, "%s", describePath(rep))
	} else {
		d.say("connect", true, "connected to %s through the dht-relay", short)
	}
	d.say("rtt", true, "%v (median of %d pings through the tunnel; min %v, max %v)", ms(res.MedianRTT()), len(res.RTTs), ms(res.RTTs[0]), ms(res.RTTs[len(res.RTTs)-1]))
	switch {
	case res.Probed:
		d.say("throughput", true, "%.1f MB/s up, %.1f MB/s down (%d MiB each way)", res.Up/1e6, res.Down/1e6, sample>>20)
	case errors.Is(err, tunnel.ErrProbeDial):
		d.fail("throughput", "a second connection to the peer failed twice after the first worked: run the doctor again, and if it fails again, check the relay or the peer's load", "not measured: %v", err)
	case err != nil:
		d.fail("throughput", "the tunnel breaks under load: check the link (packet loss) or try --relay-through KEY", "the sample failed: %v", err)
	default:
		d.say("throughput", true, "not measured: the peer runs a keytunnel without the probe (or is not keytunnel)")
	}
}

// describePath says how a connection runs and why.
func describePath(r *dht.DialReport) string {
	natOf := func() string {
		if r.Theirs == "unknown" {
			// The peer punched before its answer to our round arrived.
			return fmt.Sprintf("this side %s, the peer's NAT not reported", r.Ours)
		}
		return fmt.Sprintf("this side %s, peer %s", r.Ours, r.Theirs)
	}
	nat := natOf()
	switch r.Path {
	case dht.PathDirect:
		return fmt.Sprintf("direct to %v: the peer is reachable at its address, no holepunch needed (%s)", r.Server, nat)
	case dht.PathLAN:
		return fmt.Sprintf("direct over the LAN to %v: the peer is behind the same NAT (%s)", r.Server, nat)
	case dht.PathHolepunch:
		return fmt.Sprintf("direct to %v, holepunched (%s)", r.Server, nat)
	case dht.PathPeerFirst:
		return fmt.Sprintf("direct to %v: the peer's packets reached this host first (%s)", r.Server, nat)
	case dht.PathRelay:
		why := "the relay paired before a direct path was found; punching goes on and moves the connection off the relay if it works"
		if errors.Is(r.DirectErr, dht.ErrDoubleRandomized) && r.Theirs == "unknown" {
			r.Theirs = "random" // it said so when it aborted the punch
			nat = natOf()
		}
		switch {
		case r.Ours == "random" && r.Theirs == "random":
			why = "both NATs randomize ports, which no holepunch gets through"
		case r.DirectErr != nil:
			why = "no direct path: " + r.DirectErr.Error()
		}
		return fmt.Sprintf("relayed through blind relay %s… at %v: %s (%s)", r.Relay.String()[:8], r.Server, why, nat)
	}
	return r.Path
}

// connectAdvice is what to do about a failed connection.
func connectAdvice(err error) string {
	switch {
	case errors.Is(err, tunnel.ErrRefused):
		return "it refused this client's key: its owner adds this key to its --allow list (use --key FILE for a lasting key)"
	case errors.Is(err, tunnel.ErrProtocol):
		return "it is not a keytunnel expose (a hypertele or holesail server? use forward --raw)"
	case errors.Is(err, dht.ErrPeerNotFound):
		return "check that its expose runs"
	case errors.Is(err, dht.ErrCannotHolepunch), errors.Is(err, dht.ErrHolepunchAborted), errors.Is(err, dht.ErrDoubleRandomized),
		errors.Is(err, context.DeadlineExceeded):
		return "holepunching failed (when both NATs randomize it cannot work): run keytunnel relay on a host with a public UDP port and give both sides --relay-through KEY"
	}
	return "check that its expose runs; if both sides are behind strict NATs, use --relay-through KEY"
}

// ms rounds d for display: 0.1 ms below a second, else 10 ms.
func ms(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(10 * time.Millisecond)
}
