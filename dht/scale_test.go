package dht

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/vnet"
)

// scaleNodes: 1000 without -race (set DHT_SCALE to change), 400 with it
// (race instrumentation makes every node costlier); skipped by -short.
func scaleNodes() int {
	if v, err := strconv.Atoi(os.Getenv("DHT_SCALE")); err == nil && v > 0 {
		return v
	}
	if raceEnabled {
		return 400
	}
	return 1000
}

// TestScale builds an in-memory network, announces a key per 10 nodes
// from random nodes and looks every one of them up from another node.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test skipped with -short")
	}
	n := scaleNodes()
	net := vnet.New(vnet.Config{Seed: 1, Delay: time.Millisecond, RecvQueue: 1024})
	t.Cleanup(func() { net.Close() })

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tn, err := Testnet(ctx, n, &TestnetOptions{
		Parallel: 16,
		Listen: func(netip.AddrPort) (rpc.PacketConn, error) {
			return net.Listen(netip.AddrPort{})
		},
		Config: &Config{RPC: &rpc.Config{RequestRate: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	boot := time.Since(start)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perNode := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(n)

	keys := n / 10
	if keys < 10 {
		keys = 10
	}
	var msgs, ms, hops []float64
	fails := 0
	for i := range keys {
		kp := keyFor(i)
		topic := Hash(fmt.Appendf(nil, "scale topic %d", i))
		a := tn.Nodes[(i*7919)%n]
		b := tn.Nodes[(i*104729+1)%n]
		if err := a.Announce(ctx, topic, kp, nil, nil); err != nil {
			t.Fatalf("announce %d: %v", i, err)
		}
		t0 := time.Now()
		s := b.Lookup(ctx, topic)
		found := false
		for r := range s.All(ctx) {
			for _, p := range r.Peers {
				if p.PublicKey == kp.Public && !found {
					// Hops to the first node that holds the record.
					found = true
					hops = append(hops, float64(r.Hops))
				}
			}
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
		ok, bad := s.Query().Counts()
		msgs = append(msgs, float64(ok+bad))
		if !found {
			fails++
		}
	}
	if fails > 0 {
		t.Errorf("%d of %d lookups did not find the announced key", fails, keys)
	}
	if len(hops) > 0 && (pct(hops, 50) < 1 || pct(hops, 99) > 20) {
		t.Errorf("hops median %.0f p99 %.0f: out of any plausible range", pct(hops, 50), pct(hops, 99))
	}
	t.Logf("%d nodes (race=%v): bootstrapped in %v, ~%d KiB heap per node; %d lookups: hops to the record median %.0f p99 %.0f, requests median %.0f p99 %.0f, ms median %.1f p99 %.1f",
		n, raceEnabled, boot.Round(time.Millisecond), perNode/1024, keys, pct(hops, 50), pct(hops, 99), pct(msgs, 50), pct(msgs, 99), pct(ms, 50), pct(ms, 99))
}

func pct(v []float64, p int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}
