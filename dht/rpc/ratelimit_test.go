package rpc

import (
	"net/netip"
	"testing"
	"time"
)

// A sender that rotates source ports, or addresses within its IPv6 /64,
// is one source (issue #13: 64 rotating ports got 3000 of 3000 PINGs
// answered). Loopback senders keep one bucket per port.
func TestRateLimiterPerSource(t *testing.T) {
	now := time.Now()
	count := func(r *RateLimiter, addr func(i int) netip.AddrPort) int {
		n := 0
		for i := range 3000 {
			if r.Allow(now, addr(i)) {
				n++
			}
		}
		return n
	}
	v4 := netip.MustParseAddr("198.51.100.7")
	if n := count(NewRateLimiter(100, 200, 1000), func(i int) netip.AddrPort {
		return netip.AddrPortFrom(v4, uint16(1024+i%64))
	}); n != 200 {
		t.Errorf("IPv4, 64 rotating ports: %d of 3000 allowed, want the burst (200)", n)
	}
	if n := count(NewRateLimiter(100, 200, 1000), func(i int) netip.AddrPort {
		b := netip.MustParseAddr("2001:db8:1:2::").As16()
		b[15], b[14] = byte(i), byte(i>>8)
		return netip.AddrPortFrom(netip.AddrFrom16(b), uint16(1024+i))
	}); n != 200 {
		t.Errorf("IPv6, rotating addresses in one /64: %d of 3000 allowed, want 200", n)
	}
	r := NewRateLimiter(100, 200, 1000)
	count(r, func(int) netip.AddrPort { return netip.AddrPortFrom(v4, 1) })
	if !r.Allow(now, netip.MustParseAddrPort("198.51.100.8:1")) || !r.Allow(now, netip.MustParseAddrPort("[2001:db8:1:3::1]:1")) {
		t.Error("another source is limited with the flooding one")
	}
	if n := count(NewRateLimiter(100, 200, 1000), func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1024+i%64))
	}); n != 3000 {
		t.Errorf("loopback, 64 ports: %d of 3000 allowed, want all (one bucket per port)", n)
	}
}
