package admit

import (
	"net/netip"
	"sync"
)

// Source is the admission key of a remote address ("ip:port" or a bare IP,
// as X-Forwarded-For gives): the IPv4 address, or the IPv6 /64, which is
// what one host usually has to itself; counting IPv6 addresses one by one
// would let a single host open connections without bound. An IPv4-mapped
// IPv6 address counts as its IPv4 address. An address that does not parse
// gives the zero Prefix (IsValid false).
func Source(remote string) netip.Prefix {
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		ip = ap.Addr()
	} else if a, err := netip.ParseAddr(remote); err == nil {
		ip = a
	}
	return SourceOf(ip)
}

// SourceOf is Source for an address already parsed.
func SourceOf(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Counter counts connections in one state, in total and per source. The
// zero value is ready to use; it is safe for concurrent use.
type Counter struct {
	mu    sync.Mutex
	total int
	per   map[netip.Prefix]int
}

// Acquire counts one more connection from src unless that would pass max
// in total or perSource for src.
func (c *Counter) Acquire(src netip.Prefix, max, perSource int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= max || c.per[src] >= perSource {
		return false
	}
	if c.per == nil {
		c.per = map[netip.Prefix]int{}
	}
	c.total++
	c.per[src]++
	return true
}

// Release uncounts a connection Acquire counted.
func (c *Counter) Release(src netip.Prefix) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.per[src]--; c.per[src] <= 0 {
		delete(c.per, src)
	}
}

// Count is the total counted now.
func (c *Counter) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
