package rpc

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/compact"
)

// TestDeadNodeRemoved: a lookup that times out on a table node removes it
// from the table and sends DOWN_HINTs to the nodes that referred to it.
func TestDeadNodeRemoved(t *testing.T) {
	h, all := memNetwork(t, 8)
	a := all[1]
	// The dead node is one the querier has in its table (of 7 others in
	// a network of 8, some are always there), so the test never skips.
	var dead netip.AddrPort
	for _, d := range all[2:] {
		if inTables(t, []*DHT{a}, serverAddr(d)) == 1 {
			dead = serverAddr(d)
			break
		}
	}
	if !dead.IsValid() {
		t.Fatal("the querier's table holds none of the other nodes")
	}
	var mu sync.Mutex
	downHints := 0
	h.drop = func(from, to netip.AddrPort, b []byte) bool {
		if req, err := DecodeRequest(b); err == nil && req.Internal && req.Command == CmdDownHint {
			mu.Lock()
			downHints++
			mu.Unlock()
		}
		return to.Addr() == dead.Addr() || from.Addr() == dead.Addr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := a.FindNode(ctx, NodeID(dead), &QueryOptions{Retries: -1})
	if err := q.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if inTables(t, []*DHT{a}, dead) != 0 {
		t.Error("dead node still in the table after the lookup timed out on it")
	}
	mu.Lock()
	defer mu.Unlock()
	if downHints == 0 {
		t.Error("no DOWN_HINT sent")
	}
	t.Logf("%d DOWN_HINTs", downHints)
}

// TestRelay: hyperdht's router pattern. A asks B; B relays to C with A's
// address in the value; C replies straight to A with the same tid.
func TestRelay(t *testing.T) {
	h := newHub()
	var cAddr netip.AddrPort
	mk := func(handler func(*Request) bool) *DHT {
		return startMem(t, h, Config{Mode: Ephemeral, NoQuickFirewall: true, Handler: handler})
	}
	b := mk(func(r *Request) bool {
		r.Relay(compact.AppendIPv4Address(nil, r.From), cAddr, nil)
		return true
	})
	c := mk(func(r *Request) bool {
		d := compact.NewDecoder(r.Value)
		orig := d.IPv4Address()
		if d.Err() != nil {
			return false
		}
		r.Reply([]byte("from c"), &ReplyOptions{To: orig})
		return true
	})
	cAddr = serverAddr(c)
	a := mk(nil)
	waitReady(t, a, b, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.Request(ctx, serverAddr(b), RequestOptions{Command: 50, Value: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Value) != "from c" || res.From != cAddr {
		t.Fatalf("relayed reply %+v", res)
	}
}

// TestManyRequests sends far more requests than the congestion window
// holds; the excess waits (for replies, which free their slot, or for
// drains) and everything completes. The hub counts what is in flight:
// never more than the window's 2 x MaxWindow. Replies on the in-memory
// hub come within microseconds, so how long it takes says nothing: a
// bound on the time failed whenever replies freed slots as fast as the
// goroutines sent.
func TestManyRequests(t *testing.T) {
	h := newHub()
	srv := startMem(t, h, Config{Mode: Ephemeral, NoQuickFirewall: true, RequestRate: -1})
	cli := startMem(t, h, Config{Mode: Ephemeral, NoQuickFirewall: true, MaxWindow: 20})
	waitReady(t, srv, cli)
	var mu sync.Mutex
	inFlight, most := 0, 0
	sa := serverAddr(srv)
	h.drop = func(from, to netip.AddrPort, _ []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case to == sa:
			inFlight++
			most = max(most, inFlight)
		case from == sa:
			inFlight--
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	start := time.Now()
	for range 100 {
		wg.Go(func() {
			if _, err := cli.Ping(ctx, sa); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("100 requests in %v, at most %d in flight", time.Since(start), most)
	if most > 40 {
		t.Fatalf("%d requests in flight at once through a window of 20 per slot, 40 in all", most)
	}
}
