package rpc

import (
	"net/netip"
	"time"
)

// Source is the key that rate limits count under for a remote address: an
// IPv4 address or an IPv6 /64, with the port dropped, since a sender that
// rotates source ports (or addresses within its /64, which one host
// usually has to itself) is still one sender. Loopback addresses keep
// their port: they are this host's own processes (a local test network,
// co-hosted peers), not one remote sender.
func Source(a netip.AddrPort) netip.AddrPort {
	ip := a.Addr().Unmap()
	if ip.IsLoopback() {
		return netip.AddrPortFrom(ip, a.Port())
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return netip.AddrPortFrom(ip, 0)
}

// RateLimiter bounds the events counted per Source with a token bucket
// each. It holds at most maxEntries buckets; sources beyond that share
// one overflow bucket (with four times the rate), so a flood of spoofed
// sources costs bounded memory. It is not safe for concurrent use.
type RateLimiter struct {
	rate       float64 // tokens per second
	burst      float64
	maxEntries int
	buckets    map[netip.AddrPort]*bucket
	overflow   bucket
	dropped    uint64
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewRateLimiter allows rate events per second and source, in bursts of up
// to burst; a rate <= 0 allows everything.
func NewRateLimiter(rate float64, burst, maxEntries int) *RateLimiter {
	return &RateLimiter{rate: rate, burst: float64(burst), maxEntries: maxEntries, buckets: make(map[netip.AddrPort]*bucket)}
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(burst, b.tokens+dt*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Allow reports whether an event from addr may be processed at now.
func (r *RateLimiter) Allow(now time.Time, addr netip.AddrPort) bool {
	if r.rate <= 0 {
		return true
	}
	src := Source(addr)
	b := r.buckets[src]
	if b == nil {
		if len(r.buckets) >= r.maxEntries {
			if r.overflow.take(now, r.rate*4, r.burst*4) {
				return true
			}
			r.dropped++
			return false
		}
		b = &bucket{}
		r.buckets[src] = b
	}
	if b.take(now, r.rate, r.burst) {
		return true
	}
	r.dropped++
	return false
}

// Dropped is how many events Allow refused.
func (r *RateLimiter) Dropped() uint64 { return r.dropped }

// Sweep forgets buckets that have refilled completely.
func (r *RateLimiter) Sweep(now time.Time) {
	for a, b := range r.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*r.rate >= r.burst {
			delete(r.buckets, a)
		}
	}
}
