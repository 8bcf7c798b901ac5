package rpc

import (
	"net/netip"
	"time"
)

// rateLimiter bounds the requests processed per source address with a
// token bucket each. It holds at most maxEntries buckets; addresses beyond
// that share one overflow bucket, so a flood of spoofed sources costs
// bounded memory. The reference has no such limit; the defaults are far
// above what any honest peer sends.
type rateLimiter struct {
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

func newRateLimiter(rate float64, burst, maxEntries int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), maxEntries: maxEntries, buckets: make(map[netip.AddrPort]*bucket)}
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

// allow reports whether a request from addr may be processed at now.
func (r *rateLimiter) allow(now time.Time, addr netip.AddrPort) bool {
	if r.rate <= 0 {
		return true
	}
	b := r.buckets[addr]
	if b == nil {
		if len(r.buckets) >= r.maxEntries {
			if r.overflow.take(now, r.rate*4, r.burst*4) {
				return true
			}
			r.dropped++
			return false
		}
		b = &bucket{}
		r.buckets[addr] = b
	}
	if b.take(now, r.rate, r.burst) {
		return true
	}
	r.dropped++
	return false
}

// sweep forgets buckets that have refilled completely.
func (r *rateLimiter) sweep(now time.Time) {
	for a, b := range r.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*r.rate >= r.burst {
			delete(r.buckets, a)
		}
	}
}
