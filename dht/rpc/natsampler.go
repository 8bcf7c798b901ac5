package rpc

import "net/netip"

// natSample is one (host, port) or (host, *) counter of the sampler.
type natSample struct {
	host netip.Addr
	port uint16 // 0 for the host-only counter
	hits int
}

// natSampler is nat-sampler 1.0.1: it keeps the last 16 reported public
// addresses as (host, port) and (host, *) counters in a 32-slot ring and
// derives our address from the most frequent ones.
type natSampler struct {
	host netip.Addr // invalid when unknown
	port uint16     // 0 when unknown or randomised
	size int

	a, b      *natSample
	threshold int
	top       int
	samples   []*natSample
}

// bump looks for the same counter among the last four of its kind (the
// ring interleaves (host,port) and (host,*) counters) and increments it.
func (s *natSampler) bump(host netip.Addr, port uint16, inc int) *natSample {
	for i := range 4 {
		j := (s.top - inc - 2*i) & 31
		if j >= len(s.samples) {
			break
		}
		if c := s.samples[j]; c.port == port && c.host == host {
			c.hits++
			return c
		}
	}
	return &natSample{host: host, port: port, hits: 1}
}

func (s *natSampler) add(addr netip.AddrPort) {
	host, port := addr.Addr().Unmap(), addr.Port()
	a := s.bump(host, port, 2)
	b := s.bump(host, 0, 1)
	if len(s.samples) < 32 {
		s.size++
		switch {
		case s.size < 4:
			s.threshold = s.size
		case s.size < 8:
			s.threshold = s.size - 1
		case s.size < 12:
			s.threshold = s.size - 2
		default:
			s.threshold = s.size - 3
		}
		s.samples = append(s.samples, a, b)
		s.top += 2
	} else {
		if s.top == 32 {
			s.top = 0
		}
		s.samples[s.top].hits--
		s.samples[s.top] = a
		s.top++
		s.samples[s.top].hits--
		s.samples[s.top] = b
		s.top++
	}
	if s.a == nil || s.a.hits < a.hits {
		s.a = a
	}
	if s.b == nil || s.b.hits < b.hits {
		s.b = b
	}
	switch {
	case s.a.hits >= s.threshold:
		s.host, s.port = s.a.host, s.a.port
	case s.b.hits >= s.threshold:
		s.host, s.port = s.b.host, 0
	default:
		s.host, s.port = netip.Addr{}, 0
	}
}
