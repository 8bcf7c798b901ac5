package rpc

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
)

// TestNATLab runs dht-rpc nodes in network namespaces behind real
// iptables NATs: a node behind MASQUERADE samples CONSISTENT, one behind
// MASQUERADE --random-fully samples RANDOM, and a node on an open address
// samples OPEN and, once its stability ticks run out, turns persistent and
// enters other nodes' routing tables. Needs root (it runs in CI).
func TestNATLab(t *testing.T) {
	lab := natlab.New(t)
	pub := lab.Public()

	start := func(h *natlab.Host, cfg Config) *DHT {
		t.Helper()
		srv, cli := h.ListenUDP(0), h.ListenUDP(0)
		if cfg.Bootstrapper.IsValid() {
			cfg.Bootstrapper = h.AddrPort(srv.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		}
		cfg.Conn, cfg.ClientConn = srv, cli
		cfg.Logger = testLogger()
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	addrOf := func(h *natlab.Host, d *DHT) netip.AddrPort {
		a, _ := addrPort(d.conns[sockServer].LocalAddr())
		return h.AddrPort(a.Port())
	}

	// A small public network: a bootstrap node and six persistent nodes on
	// three more hosts, so NAT samples come from distinct addresses. The
	// open node below ticks 100 times faster than normal, and so sends
	// more than the default rate limit allows one source (its two sockets
	// count as one), so the network's nodes do not limit.
	bh := lab.Host(pub)
	// Bootstrapper only needs to be valid here; start fills in the address.
	boot := start(bh, Config{Bootstrapper: bh.AddrPort(1), RequestRate: -1})
	waitReady(t, boot)
	bootAddr := addrOf(bh, boot).String()
	var public []*DHT
	for range 3 {
		h := lab.Host(pub)
		for range 2 {
			public = append(public, start(h, Config{Bootstrap: []string{bootAddr}, Mode: Persistent, RequestRate: -1}))
		}
	}
	waitReady(t, public...)

	cons := lab.NAT(natlab.Consistent)
	rnd := lab.NAT(natlab.Random)
	ch, rh, oh := lab.Host(cons), lab.Host(rnd), lab.Host(pub)
	dc := start(ch, Config{Bootstrap: []string{bootAddr}})
	dr := start(rh, Config{Bootstrap: []string{bootAddr}})
	persistent := make(chan struct{}, 1)
	ocfg := Config{Bootstrap: []string{bootAddr}, Events: func(e Event) {
		if e.Kind == EventPersistent {
			select {
			case persistent <- struct{}{}:
			default:
			}
		}
	}}
	// The adaptive timer runs for real, on 50 ms ticks instead of 5 s,
	// so its 240 stable ticks take 12 s rather than 20 minutes.
	ocfg.tickInterval = 50 * time.Millisecond
	do := start(oh, ocfg)
	waitReady(t, dc, dr, do)

	// Sampling may need a few more replies after bootstrap; poll briefly.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if dc.State().Firewall == FirewallConsistent && dr.State().Firewall == FirewallRandom && do.State().Firewall == FirewallOpen {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := dc.State(); s.Firewall != FirewallConsistent || !s.Firewalled || !s.Ephemeral || s.Host != cons.Addr() || s.Port == 0 {
		t.Errorf("behind MASQUERADE: %+v (NAT address %v)", s, cons.Addr())
	}
	if s := dr.State(); s.Firewall != FirewallRandom || !s.Firewalled || !s.Ephemeral || s.Host != rnd.Addr() || s.Port != 0 {
		t.Errorf("behind MASQUERADE --random-fully: %+v (NAT address %v)", s, rnd.Addr())
	}
	if s := do.State(); s.Firewall != FirewallOpen || s.Firewalled || s.Host != oh.Addr() {
		t.Errorf("open host: %+v (address %v)", s, oh.Addr())
	}

	// The open node turns persistent by itself and is then taken into the
	// tables of nodes it talks to; the NATed ones never are.
	select {
	case <-persistent:
	case <-time.After(60 * time.Second):
		t.Fatalf("open node still ephemeral: %+v", do.State())
	}
	me := addrOf(oh, do)
	if id, ok := do.ID(); !ok || id != NodeID(me) {
		t.Fatalf("persistent node id %v %v, want %v", id, ok, NodeID(me))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range public[:3] {
		if _, err := do.Ping(ctx, addrOfAny(t, p)); err != nil {
			t.Fatal(err)
		}
	}
	if n := inTables(t, public[:3], me); n != 3 {
		t.Errorf("persistent open node in %d of 3 tables", n)
	}
	for _, d := range append(public, boot) {
		nodes, _ := d.Nodes(ctx, 0)
		for _, a := range nodes {
			if a.Addr() == cons.Addr() || a.Addr() == rnd.Addr() {
				t.Errorf("a NATed node (%v) is in a routing table", a)
			}
		}
	}
}

// addrOfAny finds the public address of a node started on some lab host:
// its socket is bound to the wildcard address, so the host comes from the
// node's own sampled view.
func addrOfAny(t *testing.T, d *DHT) netip.AddrPort {
	t.Helper()
	s := d.State()
	a, _ := addrPort(d.conns[sockServer].LocalAddr())
	if !s.Host.IsValid() {
		t.Fatalf("node %v does not know its host", a)
	}
	return netip.AddrPortFrom(s.Host, a.Port())
}
