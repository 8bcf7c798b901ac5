package vnet

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func run(t *testing.T, cfg Config, n int) (got []int, stats [4]uint64) {
	nw := New(cfg)
	defer nw.Close()
	a, _ := nw.Listen(netip.AddrPort{})
	b, _ := nw.Listen(netip.AddrPort{})
	for i := range n {
		a.WriteTo([]byte{byte(i), byte(i >> 8)}, b.LocalAddr())
		time.Sleep(10 * time.Microsecond)
	}
	buf := make([]byte, 10)
	for {
		b.SetReadDeadline(time.Now().Add(cfg.Delay*3 + 50*time.Millisecond))
		k, from, err := b.ReadFrom(buf)
		if err != nil {
			break
		}
		if from.(*net.UDPAddr).AddrPort() != a.AddrPort() || k != 2 {
			t.Fatalf("from %v len %d", from, k)
		}
		got = append(got, int(buf[0])|int(buf[1])<<8)
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return got, [4]uint64{nw.Dropped, nw.Duplicated, nw.Reordered, nw.Sent}
}

func TestImpairments(t *testing.T) {
	cfg := Config{Seed: 7, Loss: 0.1, Duplicate: 0.05, Reorder: 0.1, Delay: 5 * time.Millisecond}
	got, st := run(t, cfg, 1000)
	if st[0] < 60 || st[0] > 140 || st[1] < 20 || st[2] < 60 {
		t.Fatalf("stats %v", st)
	}
	if len(got) != 1000-int(st[0])+int(st[1]) {
		t.Fatalf("delivered %d, stats %v", len(got), st)
	}
	reordered := 0
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			reordered++
		}
	}
	if reordered == 0 {
		t.Fatal("no reordering observed")
	}
	// Same seed, same decisions.
	_, st2 := run(t, cfg, 1000)
	if st != st2 {
		t.Fatalf("not deterministic: %v vs %v", st, st2)
	}
}

func TestMTUAndRate(t *testing.T) {
	nw := New(Config{MTU: 100, Rate: 100_000})
	defer nw.Close()
	a, _ := nw.Listen(netip.AddrPort{})
	b, _ := nw.Listen(netip.AddrPort{})
	a.WriteTo(make([]byte, 101), b.LocalAddr())
	start := time.Now()
	for range 50 {
		a.WriteTo(make([]byte, 100), b.LocalAddr()) // 5000 B at 100 kB/s = 50 ms
	}
	buf := make([]byte, 200)
	for range 50 {
		b.SetReadDeadline(time.Now().Add(time.Second))
		if n, _, err := b.ReadFrom(buf); err != nil || n != 100 {
			t.Fatalf("%d %v", n, err)
		}
	}
	if el := time.Since(start); el < 40*time.Millisecond {
		t.Fatalf("rate limit not applied: %v", el)
	}
	if nw.TooBig != 1 {
		t.Fatal("oversized datagram delivered")
	}
}
