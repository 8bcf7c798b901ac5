package rpc

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

func testLogger() *slog.Logger {
	if os.Getenv("DHTRPC_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// startMem starts a node on the hub with a server and a client socket on
// one fresh host.
func startMem(t testing.TB, h *hub, cfg Config) *DHT {
	t.Helper()
	srv := h.listen(netip.AddrPort{})
	cli := h.listen(netip.AddrPortFrom(srv.addr.Addr(), 5000))
	if cfg.Bootstrapper.IsValid() {
		cfg.Bootstrapper = srv.addr
	}
	cfg.Conn, cfg.ClientConn = srv, cli
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); srv.Close(); cli.Close() })
	return d
}

func serverAddr(d *DHT) netip.AddrPort {
	a, _ := addrPort(d.conns[sockServer].LocalAddr())
	return a
}

func waitReady(t testing.TB, ds ...*DHT) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, d := range ds {
		if err := d.WaitReady(ctx); err != nil {
			t.Fatalf("node %v not ready: %v", serverAddr(d), err)
		}
	}
}

func TestMemBootstrapSmall(t *testing.T) {
	h := newHub()
	boot := startMem(t, h, Config{Bootstrapper: netip.MustParseAddrPort("1.1.1.1:1")})
	waitReady(t, boot)
	if s := boot.State(); s.Ephemeral || s.Firewalled || s.ID != NodeID(serverAddr(boot)) {
		t.Fatalf("bootstrapper state %+v", s)
	}
	var ds []*DHT
	for range 5 {
		ds = append(ds, startMem(t, h, Config{Bootstrap: []string{serverAddr(boot).String()}, Mode: Persistent}))
	}
	waitReady(t, ds...)
	for _, d := range ds {
		s := d.State()
		if s.Ephemeral || s.Firewalled || s.ID != NodeID(serverAddr(d)) {
			t.Errorf("node %v: state %+v", serverAddr(d), s)
		}
		if s.Host != serverAddr(d).Addr() || s.Port != serverAddr(d).Port() {
			t.Errorf("node %v learned %v:%d", serverAddr(d), s.Host, s.Port)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := ds[0].FindNode(ctx, NodeID(serverAddr(ds[4])), nil)
	if err := q.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	cl := q.Closest()
	if len(cl) == 0 || cl[0].From != serverAddr(ds[4]) {
		t.Fatalf("closest %v", froms(cl))
	}
	res, err := ds[1].Ping(ctx, serverAddr(ds[2]))
	if err != nil || res.To.Addr() != serverAddr(ds[1]).Addr() {
		t.Fatalf("ping: %v %v", res, err)
	}
}

func froms(rs []*Response) []netip.AddrPort {
	var out []netip.AddrPort
	for _, r := range rs {
		out = append(out, r.From)
	}
	return out
}

func randomID() ID {
	var id ID
	rand.Read(id[:])
	return id
}

// TestVirtualNetwork runs many Go nodes on the in-memory hub and checks
// that lookups from everywhere converge on the true k closest nodes.
func TestVirtualNetwork(t *testing.T) {
	n := 60
	if testing.Short() {
		n = 25
	}
	h := newHub()
	boot := startMem(t, h, Config{Bootstrapper: netip.MustParseAddrPort("1.1.1.1:1")})
	waitReady(t, boot)
	all := []*DHT{boot}
	for i := range n {
		d := startMem(t, h, Config{Bootstrap: []string{serverAddr(boot).String()}, Mode: Persistent})
		all = append(all, d)
		if i%10 == 9 {
			waitReady(t, all...)
		}
	}
	waitReady(t, all...)
	ids := make([]ID, len(all))
	for i, d := range all {
		ids[i] = NodeID(serverAddr(d))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const queries = 20
	var mu sync.Mutex
	var totalHit, totalWant, totalOK, totalErr int
	before := h.sent.Load()
	var wg sync.WaitGroup
	for i := range queries {
		wg.Go(func() {
			target := randomID()
			d := all[1+(i*7)%n]
			q := d.FindNode(ctx, target, nil)
			if err := q.Wait(ctx); err != nil {
				t.Errorf("query %d: %v", i, err)
				return
			}
			want := slices.Clone(ids)
			slices.SortFunc(want, func(a, b ID) int { return compareDistance(&target, &a, &b) })
			want = want[:K]
			// the querying node does not count itself
			self := NodeID(serverAddr(d))
			want = slices.DeleteFunc(want, func(x ID) bool { return x == self })
			got := map[ID]bool{}
			for _, r := range q.Closest() {
				got[*r.FromID] = true
			}
			hit := 0
			for _, w := range want {
				if got[w] {
					hit++
				}
			}
			ok, bad := q.Counts()
			mu.Lock()
			totalHit += hit
			totalWant += len(want)
			totalOK += ok
			totalErr += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	msgs := h.sent.Load() - before
	t.Logf("%d nodes, %d queries: %d/%d of the true k closest found; %.1f replies and %.1f failures per query; %.1f datagrams per query",
		len(all), queries, totalHit, totalWant, float64(totalOK)/queries, float64(totalErr)/queries, float64(msgs)/queries)
	if totalHit*100 < totalWant*95 {
		t.Errorf("queries did not converge: %d/%d", totalHit, totalWant)
	}
	fmt.Fprint(os.Stderr)
}
