package rpc

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

func udp(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// goPeer is a Go node on two loopback sockets with a test handler:
// 42 echoes "go:"+value, 43 stores values that came with a valid token.
type goPeer struct {
	*DHT
	addr   netip.AddrPort
	mu     sync.Mutex
	stored [][]byte
}

func startGo(t testing.TB, cfg Config) *goPeer {
	t.Helper()
	srv := udp(t)
	if cfg.Bootstrapper.IsValid() {
		cfg.Bootstrapper = srv.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	cfg.Conn, cfg.ClientConn = srv, udp(t)
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	p := &goPeer{addr: srv.LocalAddr().(*net.UDPAddr).AddrPort()}
	cfg.Handler = func(r *Request) bool {
		switch r.Command {
		case 42:
			r.Reply(append([]byte("go:"), r.Value...), nil)
		case 43:
			if r.Token != nil {
				p.mu.Lock()
				p.stored = append(p.stored, append([]byte(nil), r.Value...))
				p.mu.Unlock()
			}
			r.Reply(nil, nil)
		default:
			return false
		}
		return true
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.DHT = d
	t.Cleanup(func() { d.Close() })
	return p
}

type nodePeer struct {
	p      *nodetest.Proc
	addr   netip.AddrPort
	client netip.AddrPort
	id     string
}

func (n *nodePeer) send(format string, args ...any) {
	fmt.Fprintf(n.p.Stdin(), format+"\n", args...)
}

func startNodePeer(t *testing.T, args ...string) *nodePeer {
	t.Helper()
	p := nodetest.Start(t, "dhtrpc-peer.js", args...)
	ports := strings.Fields(p.Expect("port ", 20*time.Second))
	n := &nodePeer{p: p}
	n.addr = netip.MustParseAddrPort("127.0.0.1:" + ports[0])
	n.client = netip.MustParseAddrPort("127.0.0.1:" + ports[1])
	return n
}

func (n *nodePeer) ready(t *testing.T) {
	t.Helper()
	f := strings.Fields(n.p.Expect("ready ", 30*time.Second))
	n.id = f[0]
	if f[0] == "null" {
		t.Errorf("node peer %v is still ephemeral: %v", n.addr, f)
	}
}

func freePort(t *testing.T) int {
	c := udp(t)
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	return port
}

// TestInteropMixed builds one loopback network from Go and Node nodes: a
// Go bootstrap node serves Node nodes, a Node bootstrap node serves Go
// nodes, and lookups, pings and application commands cross both ways.
func TestInteropMixed(t *testing.T) {
	nodetest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	nbPort := freePort(t)
	nb := startNodePeer(t, "bootstrap", fmt.Sprint(nbPort))
	gb := startGo(t, Config{Bootstrapper: netip.MustParseAddrPort("127.0.0.1:1"), Nodes: []netip.AddrPort{nb.addr}})
	waitReady(t, gb.DHT)
	nb.ready(t)

	// Node nodes bootstrap from the Go bootstrap node.
	var nps []*nodePeer
	for range 3 {
		nps = append(nps, startNodePeer(t, "node", gb.addr.String(), "persistent"))
	}
	// Go nodes bootstrap from the Node bootstrap node.
	var gps []*goPeer
	for range 3 {
		gps = append(gps, startGo(t, Config{Bootstrap: []string{nb.addr.String()}, Mode: Persistent}))
	}
	for _, n := range nps {
		n.ready(t)
	}
	for _, g := range gps {
		waitReady(t, g.DHT)
		s := g.State()
		if s.Ephemeral || s.Firewalled {
			t.Errorf("go node %v: %+v", g.addr, s)
		}
		// The Go node learned its public address from Node nodes.
		if s.Host != g.addr.Addr() || s.Port != g.addr.Port() {
			t.Errorf("go node %v learned %v:%d", g.addr, s.Host, s.Port)
		}
		if s.ID != NodeID(g.addr) {
			t.Errorf("go node %v: id %v", g.addr, s.ID)
		}
	}
	for _, n := range nps {
		if want := NodeID(n.addr).String(); n.id != want {
			t.Errorf("node peer %v id %s, want %s", n.addr, n.id, want)
		}
	}
	if t.Failed() {
		return
	}

	t.Run("go finds node", func(t *testing.T) {
		for _, n := range nps {
			q := gps[0].FindNode(ctx, NodeID(n.addr), nil)
			if err := q.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			cl := q.Closest()
			if len(cl) == 0 || cl[0].From != n.addr {
				t.Errorf("FindNode(%v) closest %v", n.addr, froms(cl))
			}
		}
	})
	t.Run("node finds go", func(t *testing.T) {
		for _, g := range gps {
			nps[2].send("findnode %s", NodeID(g.addr))
			cl := nps[2].p.Expect("closest ", 30*time.Second)
			first, _, _ := strings.Cut(cl, ",")
			if first != g.addr.String() {
				t.Errorf("node findnode(%v): closest %s", g.addr, cl)
			}
			if end := nps[2].p.Expect("end ", 5*time.Second); strings.HasPrefix(end, "0 ") {
				t.Errorf("no successes: %s", end)
			}
		}
	})
	t.Run("ping", func(t *testing.T) {
		g, n := gps[0], nps[0]
		res, err := g.Ping(ctx, n.addr)
		if err != nil {
			t.Fatal(err)
		}
		if res.To != g.addr || res.FromID == nil || *res.FromID != NodeID(n.addr) {
			t.Errorf("go→node ping: to %v id %v", res.To, res.FromID)
		}
		n.send("ping %s", g.addr)
		if got := n.p.Expect("pong ", 10*time.Second); got != n.addr.String()+" "+NodeID(g.addr).String() {
			t.Errorf("node→go ping: %s", got)
		}
	})
	t.Run("ping_nat", func(t *testing.T) {
		g, n := gps[1], nps[1]
		res, err := g.PingNAT(ctx, n.addr)
		if err != nil {
			t.Fatal(err)
		}
		if res.To != g.addr {
			t.Errorf("go→node PING_NAT: to %v, want %v", res.To, g.addr)
		}
		n.send("pingnat %s", g.addr)
		if got := n.p.Expect("pong ", 10*time.Second); !strings.HasPrefix(got, n.addr.String()+" ") {
			t.Errorf("node→go PING_NAT: %s", got)
		}
	})
	t.Run("application commands", func(t *testing.T) {
		g, n := gps[2], nps[0]
		res, err := g.Request(ctx, n.addr, RequestOptions{Command: 42, Value: []byte("hi")})
		if err != nil || string(res.Value) != "node:hi" || res.Token == nil {
			t.Fatalf("go→node 42: %+v %v", res, err)
		}
		res, err = g.Request(ctx, n.addr, RequestOptions{Command: 44})
		if err != nil || res.Error != 17 {
			t.Fatalf("go→node 44: %+v %v", res, err)
		}
		n.send("request 42 %s 6869", g.addr)
		if got := n.p.Expect("response ", 10*time.Second); !strings.HasPrefix(got, "0 "+hex.EncodeToString([]byte("go:hi"))+" ") {
			t.Errorf("node→go 42: %s", got)
		}
		n.send("request 99 %s -", g.addr)
		if got := n.p.Expect("response ", 10*time.Second); got != "1 null null" {
			t.Errorf("node→go unknown command: %s", got)
		}
		// A wrong token is refused with INVALID_TOKEN and a fresh token.
		res, err = g.Request(ctx, n.addr, RequestOptions{Command: 43, Token: rep(9), Value: []byte{1}})
		if err != nil || res.Error != CodeInvalidToken || res.Token == nil {
			t.Fatalf("bad token to node: %+v %v", res, err)
		}
		res2, err := g.Request(ctx, n.addr, RequestOptions{Command: 43, Token: res.Token, Value: []byte{1}})
		if err != nil || res2.Error != 0 {
			t.Fatalf("fresh token to node: %+v %v", res2, err)
		}
	})
	t.Run("commit", func(t *testing.T) {
		target := randomID()
		q := gps[0].Query(ctx, target, 43, []byte("from-go"), &QueryOptions{AutoCommit: true})
		if err := q.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		for _, n := range nps {
			n.send("stored")
			if got := n.p.Expect("stored", 5*time.Second); !strings.Contains(got, hex.EncodeToString([]byte("from-go"))) {
				t.Errorf("node %v did not store the Go commit: %q", n.addr, got)
			}
		}
		nps[1].send("commit 43 %x %x", target[:], []byte("from-node"))
		nps[1].p.Expect("end ", 30*time.Second)
		for _, g := range append(gps, gb) {
			g.mu.Lock()
			found := false
			for _, v := range g.stored {
				found = found || bytes.Equal(v, []byte("from-node"))
			}
			g.mu.Unlock()
			if !found {
				t.Errorf("go node %v did not store the Node commit", g.addr)
			}
		}
	})
}
