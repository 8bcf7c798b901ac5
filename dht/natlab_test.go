package dht

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// labNet is a small public HyperDHT network in the NAT lab: a bootstrap
// node and persistent nodes on three more public hosts.
type labNet struct {
	lab  *natlab.Lab
	boot []string
}

func newLabNet(t testing.TB) *labNet {
	lab := natlab.New(t)
	pub := lab.Public()
	bh := lab.Host(pub)
	bc := bh.ListenUDP(0)
	baddr := bh.AddrPort(uint16(bc.LocalAddr().(*net.UDPAddr).Port))
	start := func(c *net.UDPConn, cfg Config) *Node {
		cfg.Conn = c
		cfg.Logger = testLogger()
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	nodes := []*Node{start(bc, Config{Bootstrapper: baddr, Bootstrap: []string{}, Mode: rpc.Persistent, NotFirewalled: true})}
	for range 3 {
		h := lab.Host(pub)
		for range 2 {
			nodes = append(nodes, start(h.ListenUDP(0), Config{Bootstrap: []string{baddr.String()}, Mode: rpc.Persistent, NotFirewalled: true}))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return &labNet{lab: lab, boot: []string{baddr.String()}}
}

// host places a host on the public net or behind a new NAT of the kind.
func (ln *labNet) host(kind natlab.Kind) *natlab.Host {
	if kind == natlab.Public {
		return ln.lab.Host(ln.lab.Public())
	}
	return ln.lab.Host(ln.lab.NAT(kind))
}

// publicRelay serves a blind relay under keyFor(seed) from a node on a new
// host of the public net, until ctx ends or the test does.
func (ln *labNet) publicRelay(t testing.TB, ctx context.Context, seed int) (*natlab.Host, *BlindRelay) {
	t.Helper()
	h := ln.host(natlab.Public)
	relay, err := ln.node(t, h, natlab.Public).ServeBlindRelay(ctx, keyFor(seed), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	return h, relay
}

// relayOptions names relay as the fallback on the side that asks for it:
// the server (its listen options) or the client (its dial options).
func relayOptions(serverAsks bool, relay key.PublicKey) (*ListenOptions, *DialOptions) {
	lo, do := &ListenOptions{}, &DialOptions{}
	if serverAsks {
		lo.RelayThrough = RelayKeys(relay)
	} else {
		do.RelayThrough = RelayKeys(relay)
	}
	return lo, do
}

// node starts a user's node on h (server and client sockets, as
// keytunnel runs it, plus holepunch sockets) and waits until it knows its NAT class.
func (ln *labNet) node(t testing.TB, h *natlab.Host, kind natlab.Kind) *Node {
	t.Helper()
	n, err := New(Config{Conn: h.ListenUDP(0), ClientConn: h.ListenUDP(0), Bootstrap: ln.boot, Logger: testLogger(),
		LocalAddresses: func() []netip.Addr { return []netip.Addr{h.Addr()} },
		PunchSocket: func() (net.PacketConn, error) {
			var c *net.UDPConn
			err := h.Run(func() (err error) {
				c, err = net.ListenUDP("udp4", &net.UDPAddr{})
				return err
			})
			return c, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	// A public host samples OPEN once a PING_NAT gets through; dht-rpc
	// tries that once, at the end of its bootstrap, and may be too early:
	// then the host reads as a consistent NAT, as a Node node would, and
	// punching treats the two alike.
	ok := map[natlab.Kind]func(rpc.Firewall) bool{
		natlab.Public:     func(f rpc.Firewall) bool { return f == rpc.FirewallOpen || f == rpc.FirewallConsistent },
		natlab.Consistent: func(f rpc.Firewall) bool { return f == rpc.FirewallConsistent },
		natlab.Random:     func(f rpc.Firewall) bool { return f == rpc.FirewallRandom },
	}[kind]
	deadline := time.Now().Add(30 * time.Second)
	for !ok(n.State().Firewall) {
		if time.Now().After(deadline) {
			t.Fatalf("node behind %v classified %+v", kind, n.State())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return n
}

// publicHost is where h's packets come from on the public net.
func publicHost(h *natlab.Host, kind natlab.Kind) netip.Addr {
	if kind == natlab.Public {
		return h.Addr()
	}
	return h.Net().Addr()
}

// TestNATMatrix connects Go clients to Go servers across every pair of
// {open, consistent NAT, randomizing NAT}: all pairs but random×random
// connect directly (the path is the server's public mapping), and
// random×random fails fast with the double-randomized error.
func TestNATMatrix(t *testing.T) {
	natlab.Require(t)
	ln := newLabNet(t)
	kinds := []natlab.Kind{natlab.Public, natlab.Consistent, natlab.Random}
	var report []string
	for _, ck := range kinds {
		for _, sk := range kinds {
			name := fmt.Sprintf("client %v, server %v", ck, sk)
			sh, ch := ln.host(sk), ln.host(ck)
			srv, cli := ln.node(t, sh, sk), ln.node(t, ch, ck)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			skp := keyFor(100 + len(report))
			l, err := srv.Listen(ctx, skp, nil)
			if err != nil {
				t.Fatalf("%s: listen: %v", name, err)
			}
			echo(t, l)
			start := time.Now()
			var dr DialReport
			c, err := cli.Dial(ctx, skp.Public, &DialOptions{Report: &dr})
			took := time.Since(start)
			if ck == natlab.Random && sk == natlab.Random {
				if !errors.Is(err, ErrDoubleRandomized) {
					t.Errorf("%s: want %v, got %v", name, ErrDoubleRandomized, err)
				} else if took > 15*time.Second {
					t.Errorf("%s: failing took %v", name, took)
				}
				report = append(report, fmt.Sprintf("%s: %v after %v", name, ErrDoubleRandomized.Code, took.Round(time.Millisecond)))
			} else if err != nil {
				t.Errorf("%s: dial: %v (after %v)", name, err, took)
				report = append(report, fmt.Sprintf("%s: FAILED %v", name, err))
			} else {
				ra, _ := netip.ParseAddrPort(c.RemoteAddr().String())
				if ra.Addr() != publicHost(sh, sk) {
					t.Errorf("%s: connected to %v, want the server's public address %v", name, ra, publicHost(sh, sk))
				}
				// The report names the path and its end, and our class.
				if (dr.Path != PathDirect && dr.Path != PathHolepunch && dr.Path != PathPeerFirst) || dr.Server != ra || dr.Ours == "unknown" {
					t.Errorf("%s: dial report %+v for a direct connection to %v", name, dr, ra)
				}
				roundTrip(t, c, 256<<10)
				c.Close()
				report = append(report, fmt.Sprintf("%s: direct to %v in %v (report: %s, ours %s, theirs %s)", name, ra, took.Round(time.Millisecond), dr.Path, dr.Ours, dr.Theirs))
			}
			l.Close()
			cancel()
		}
	}
	t.Log("NAT matrix (Go client → Go server):\n  " + strings.Join(report, "\n  "))
}

// TestRelayRandomRandom: two peers behind randomizing NATs cannot punch;
// with a blind relay on the public net they connect through it, whichever
// side asked for it, and carry data intact.
func TestRelayRandomRandom(t *testing.T) {
	natlab.Require(t)
	ln := newLabNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	rh, relay := ln.publicRelay(t, ctx, 200)
	for i, serverAsks := range []bool{true, false} {
		sh, ch := ln.host(natlab.Random), ln.host(natlab.Random)
		srv, cli := ln.node(t, sh, natlab.Random), ln.node(t, ch, natlab.Random)
		skp := keyFor(201 + i)
		lo, do := relayOptions(serverAsks, relay.PublicKey())
		l, err := srv.Listen(ctx, skp, lo)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, l)
		start := time.Now()
		c, err := cli.Dial(ctx, skp.Public, do)
		if err != nil {
			t.Fatalf("server asks %v: dial: %v", serverAsks, err)
		}
		ra, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		if ra.Addr() != rh.Addr() {
			t.Errorf("server asks %v: connected to %v, want the relay at %v", serverAsks, ra, rh.Addr())
		}
		if p := cli.PathOf(c); p.Relay != relay.PublicKey() || p.Addr != ra {
			t.Errorf("server asks %v: path %v, want the relay %v at %v", serverAsks, p, relay.PublicKey(), ra)
		}
		checkRelayStats(t, ctx, cli, 1, 0)
		checkRelayStats(t, ctx, srv, 1, 0)
		roundTrip(t, c, 4<<20)
		c.Close()
		l.Close()
		t.Logf("random×random through the relay (server asks %v): connected in %v via %v", serverAsks, time.Since(start).Round(time.Millisecond), ra)
	}
	if s := relay.Stats(); s.Matched < 2 {
		t.Errorf("relay stats %+v: want 2 matched pairs", s)
	}
}

// TestRelayUpgrade: two consistent NATs that cannot reach each other at
// first connect through the relay one of them asked for; once UDP between
// them flows, the punch still under way finds the direct path and the
// connection moves there (hyperdht's upgrade from a relay), keeping every
// byte, and then no longer needs the relay at all.
func TestRelayUpgrade(t *testing.T) {
	natlab.Require(t)
	ln := newLabNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	rh, relay := ln.publicRelay(t, ctx, 210)
	for i, serverAsks := range []bool{true, false} {
		sn, cn := ln.lab.NAT(natlab.Consistent), ln.lab.NAT(natlab.Consistent)
		sh, ch := ln.lab.Host(sn), ln.lab.Host(cn)
		srv, cli := ln.node(t, sh, natlab.Consistent), ln.node(t, ch, natlab.Consistent)
		skp := keyFor(211 + i)
		lo, do := relayOptions(serverAsks, relay.PublicKey())
		l, err := srv.Listen(ctx, skp, lo)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, l)
		cn.BlockUDPWith(sn.Addr())
		c, err := cli.Dial(ctx, skp.Public, do)
		if err != nil {
			t.Fatalf("server asks %v: dial: %v", serverAsks, err)
		}
		if ra := remoteOf(c); ra.Addr() != rh.Addr() {
			t.Fatalf("server asks %v: connected to %v while the NATs cannot reach each other, want the relay at %v", serverAsks, ra, rh.Addr())
		}
		t.Logf("server asks %v:", serverAsks)
		if p := cli.PathOf(c); p.Relay != relay.PublicKey() {
			t.Errorf("server asks %v: path %v, want the relay %v", serverAsks, p, relay.PublicKey())
		}
		awaitUpgrade(t, c, cn, sn, rh)
		if p := cli.PathOf(c); !p.Relay.IsZero() || p.Addr.Addr() != sn.Addr() {
			t.Errorf("server asks %v: path after the upgrade %v, want direct to %v", serverAsks, p, sn.Addr())
		}
		checkRelayStats(t, ctx, cli, 1, 1)
		if s, err := cli.Stats(ctx); err != nil || s.HolepunchAttempts < 1 || s.HolepunchSuccesses < 1 {
			t.Errorf("server asks %v: the punch that upgraded is not counted: %+v, %v", serverAsks, s, err)
		}
		c.Close()
		l.Close()
	}
}

// TestRelayUpgradeInteropNode: the upgrade from a relay to a direct path
// across implementations, with the Go relay: a Go client and a Node server
// that asks for the relay, and a Node client asking for it to a Go server.
func TestRelayUpgradeInteropNode(t *testing.T) {
	natlab.Require(t)
	nodetest.Require(t)
	ln := newLabNet(t)
	boot := strings.Join(ln.boot, ",")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	rh, relay := ln.publicRelay(t, ctx, 220)

	t.Run("go client to node server", func(t *testing.T) {
		sn, cn := ln.lab.NAT(natlab.Consistent), ln.lab.NAT(natlab.Consistent)
		sh, ch := ln.lab.Host(sn), ln.lab.Host(cn)
		cn.BlockUDPWith(sn.Addr())
		ns := nodetest.StartIn(t, sh.ExecPrefix(), "hyperdht-relay.js", "server", boot, fmt.Sprintf("%x", keyFor(221).Seed()), relay.PublicKey().String())
		ns.Expect("listening ", 60*time.Second)
		cli := ln.node(t, ch, natlab.Consistent)
		c, err := cli.Dial(ctx, keyFor(221).Public, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		if ra := remoteOf(c); ra.Addr() != rh.Addr() {
			t.Fatalf("connected to %v while the NATs cannot reach each other, want the relay at %v", ra, rh.Addr())
		}
		awaitUpgrade(t, c, cn, sn, rh)
	})
	t.Run("node client to go server", func(t *testing.T) {
		sn, cn := ln.lab.NAT(natlab.Consistent), ln.lab.NAT(natlab.Consistent)
		sh, ch := ln.lab.Host(sn), ln.lab.Host(cn)
		srv := ln.node(t, sh, natlab.Consistent)
		l, err := srv.Listen(ctx, keyFor(222), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan *Conn, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c.(*Conn)
			io.Copy(c, c)
			c.(*Conn).CloseWrite()
		}()
		cn.BlockUDPWith(sn.Addr())
		nc := nodetest.StartIn(t, ch.ExecPrefix(), "hyperdht-relay.js", "stream", boot, keyFor(222).Public.String(), relay.PublicKey().String(), "6")
		if open := nc.Expect("open ", 60*time.Second); !strings.HasPrefix(open, rh.Addr().String()+":") {
			t.Fatalf("the Node client opened on %s while the NATs cannot reach each other, want the relay %v", open, rh.Addr())
		}
		var sc *Conn
		select {
		case sc = <-accepted:
			defer sc.Close()
		case <-time.After(10 * time.Second):
			t.Fatal("the Go server accepted nothing")
		}
		cn.UnblockUDPWith(sn.Addr())
		// Await both sides on the direct path: the Node client says so,
		// and the Go server's connection sends to the client's NAT.
		start := time.Now()
		nc.Expect("path "+sn.Addr().String()+":", 20*time.Second)
		for remoteOf(sc).Addr() != cn.Addr() {
			if time.Since(start) > 20*time.Second {
				t.Fatalf("the Go server's side still sends to %v 20 s after the direct path opened", remoteOf(sc))
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("both sides direct %v after the path opened", time.Since(start).Round(time.Millisecond))
		// Without the relay the stream still finishes.
		rh.DropUDP()
		defer rh.AllowUDP()
		f := strings.Fields(nc.Expect("", 60*time.Second))
		if len(f) != 4 || f[0] != "result" || f[1] != f[2] {
			t.Fatalf("Node client: %q", f)
		}
		if !strings.HasPrefix(f[3], sn.Addr().String()+":") {
			t.Errorf("the Node client ended on %s, want the Go server's NAT %v", f[3], sn.Addr())
		}
	})
}

// awaitUpgrade opens UDP between the client's NAT cn and the server's sn
// under a relayed connection c (through the relay host rh) and checks that
// c moves to the server's NAT within 20 s while carrying data, and that it
// then needs the relay no more: it carries on with rh's UDP dropped.
func awaitUpgrade(t *testing.T, c *Conn, cn, sn *natlab.Net, rh *natlab.Host) {
	t.Helper()
	exchange(t, c, 256<<10)
	cn.UnblockUDPWith(sn.Addr())
	start := time.Now()
	for remoteOf(c).Addr() != sn.Addr() {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("still on %v 20 s after the direct path opened", remoteOf(c))
		}
		exchange(t, c, 64<<10)
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("moved to %v %v after the path opened", remoteOf(c), time.Since(start).Round(time.Millisecond))
	rh.DropUDP()
	defer rh.AllowUDP()
	for range 8 {
		exchange(t, c, 256<<10)
	}
}

// checkRelayStats checks n's relay counters.
func checkRelayStats(t *testing.T, ctx context.Context, n *Node, fallbacks, upgrades uint64) {
	t.Helper()
	// The other side of a connection commits to the relay a moment after
	// this one may have.
	var s Stats
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if s, err = n.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		if s.RelayFallbacks == fallbacks && s.RelayUpgrades == upgrades {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("relay fallbacks %d, upgrades %d; want %d, %d", s.RelayFallbacks, s.RelayUpgrades, fallbacks, upgrades)
			break
		}
	}
	t.Logf("stats: %d dials (%d failed), holepunch %d/%d, relay fallbacks %d, upgrades %d",
		s.Dials, s.DialFailures, s.HolepunchSuccesses, s.HolepunchAttempts, s.RelayFallbacks, s.RelayUpgrades)
}

// remoteOf is the address a connection's packets go to.
func remoteOf(c *Conn) netip.AddrPort {
	a, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return a
}

// exchange writes size random bytes to an echoing peer and checks that
// they come back, leaving the connection open.
func exchange(t *testing.T, c *Conn, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	c.SetDeadline(time.Now().Add(15 * time.Second))
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := c.Write(data); errc <- err }()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("echo write: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the echo differs from what was sent")
	}
}

// TestRelayInteropNode: random×random through blind relays across
// implementations: Go peers through a Node relay, a Node client through a
// Go relay to a Go server, and a Go client to a Node server that asks for
// the Go relay.
func TestRelayInteropNode(t *testing.T) {
	natlab.Require(t)
	nodetest.Require(t)
	ln := newLabNet(t)
	boot := strings.Join(ln.boot, ",")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	// A Node relay on the public net.
	nrh := ln.host(natlab.Public)
	nodeRelayKey := keyFor(300)
	nr := nodetest.StartIn(t, nrh.ExecPrefix(), "hyperdht-relay.js", "relay", boot, fmt.Sprintf("%x", nodeRelayKey.Seed()))
	nr.Expect("relay ", 60*time.Second)
	// A Go relay on the public net.
	grh, goRelay := ln.publicRelay(t, ctx, 301)

	t.Run("go peers via node relay", func(t *testing.T) {
		sh, ch := ln.host(natlab.Random), ln.host(natlab.Random)
		srv, cli := ln.node(t, sh, natlab.Random), ln.node(t, ch, natlab.Random)
		l, err := srv.Listen(ctx, keyFor(302), &ListenOptions{RelayThrough: RelayKeys(nodeRelayKey.Public)})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		echo(t, l)
		c, err := cli.Dial(ctx, keyFor(302).Public, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		ra, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		if ra.Addr() != nrh.Addr() {
			t.Errorf("connected to %v, want the Node relay at %v", ra, nrh.Addr())
		}
		roundTrip(t, c, 4<<20)
		nr.Expect("paired", 10*time.Second)
	})
	t.Run("node client via go relay", func(t *testing.T) {
		sh, ch := ln.host(natlab.Random), ln.host(natlab.Random)
		srv := ln.node(t, sh, natlab.Random)
		l, err := srv.Listen(ctx, keyFor(303), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		echo(t, l)
		before := goRelay.Stats().Matched
		nc := nodetest.StartIn(t, ch.ExecPrefix(), "hyperdht-relay.js", "client", boot, keyFor(303).Public.String(), goRelay.PublicKey().String(), fmt.Sprint(4<<20))
		line := nc.Expect("", 90*time.Second)
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "result" || f[1] != f[2] {
			t.Fatalf("Node client: %q", line)
		}
		if !strings.HasPrefix(f[3], grh.Addr().String()+":") {
			t.Errorf("Node client's path %s, want the Go relay %v", f[3], grh.Addr())
		}
		if goRelay.Stats().Matched <= before {
			t.Errorf("the Go relay matched no pair: %+v", goRelay.Stats())
		}
	})
	t.Run("go client to node server asking for go relay", func(t *testing.T) {
		sh, ch := ln.host(natlab.Random), ln.host(natlab.Random)
		ns := nodetest.StartIn(t, sh.ExecPrefix(), "hyperdht-relay.js", "server", boot, fmt.Sprintf("%x", keyFor(304).Seed()), goRelay.PublicKey().String())
		ns.Expect("listening ", 60*time.Second)
		cli := ln.node(t, ch, natlab.Random)
		c, err := cli.Dial(ctx, keyFor(304).Public, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		ra, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		if ra.Addr() != grh.Addr() {
			t.Errorf("connected to %v, want the Go relay at %v", ra, grh.Addr())
		}
		roundTrip(t, c, 4<<20)
	})
}

// TestRelayDiesMidTransfer: when the relay host goes silent, both peers'
// reads fail with an error (not a clean EOF) well within the udx timeout,
// so nothing half-written passes as delivered.
func TestRelayDiesMidTransfer(t *testing.T) {
	natlab.Require(t)
	ln := newLabNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rh, relay := ln.publicRelay(t, ctx, 400)
	sh, ch := ln.host(natlab.Random), ln.host(natlab.Random)
	srv, cli := ln.node(t, sh, natlab.Random), ln.node(t, ch, natlab.Random)
	l, err := srv.Listen(ctx, keyFor(401), &ListenOptions{RelayThrough: RelayKeys(relay.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	serverErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		serverErr <- err
	}()
	c, err := cli.Dial(ctx, keyFor(401).Public, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Stream until the relay dies.
	clientErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				clientErr <- err
				return
			}
		}
	}()
	time.Sleep(time.Second)
	rh.DropUDP()
	start := time.Now()
	for _, ch := range []chan error{serverErr, clientErr} {
		select {
		case err := <-ch:
			if err == nil {
				t.Error("a side saw a clean end after the relay died")
			} else {
				t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
			}
		case <-time.After(45 * time.Second):
			t.Fatal("a side never noticed the relay died")
		}
	}
}

// TestSameNAT: two hosts behind one NAT (which does not hairpin) connect
// over their LAN, through the addresses both handshake payloads share.
func TestSameNAT(t *testing.T) {
	natlab.Require(t)
	ln := newLabNet(t)
	for _, kind := range []natlab.Kind{natlab.Consistent, natlab.Random} {
		nat := ln.lab.NAT(kind)
		hs := ln.lab.Hosts(nat, 2)
		srv, cli := ln.node(t, hs[0], kind), ln.node(t, hs[1], kind)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		l, err := srv.Listen(ctx, keyFor(500+int(kind)), nil)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, l)
		start := time.Now()
		c, err := cli.Dial(ctx, keyFor(500+int(kind)).Public, nil)
		if err != nil {
			t.Fatalf("behind one %v NAT: %v", kind, err)
		}
		ra, _ := netip.ParseAddrPort(c.RemoteAddr().String())
		if ra.Addr() != hs[0].Addr() {
			t.Errorf("behind one %v NAT: connected to %v, want the server's LAN address %v", kind, ra, hs[0].Addr())
		}
		roundTrip(t, c, 64<<10)
		c.Close()
		l.Close()
		cancel()
		t.Logf("behind one %v NAT: LAN path %v in %v", kind, ra, time.Since(start).Round(time.Millisecond))
	}
}
