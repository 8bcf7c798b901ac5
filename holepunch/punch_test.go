package holepunch

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type sent struct {
	to  netip.AddrPort
	ttl int
}

type fakeSocket struct {
	id   int
	mu   sync.Mutex
	sent []sent
}

func (s *fakeSocket) SendTTL(b []byte, to netip.AddrPort, ttl int) error {
	if len(b) != 1 || b[0] != 0 {
		panic("not a punch")
	}
	s.mu.Lock()
	s.sent = append(s.sent, sent{to, ttl})
	s.mu.Unlock()
	return nil
}

type fakePool struct {
	mu       sync.Mutex
	next     int
	live     map[*fakeSocket]bool
	acquired []*fakeSocket
}

func (p *fakePool) Acquire() (Socket, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	s := &fakeSocket{id: p.next}
	if p.live == nil {
		p.live = map[*fakeSocket]bool{}
	}
	p.live[s] = true
	p.acquired = append(p.acquired, s)
	return s, nil
}

func (p *fakePool) Release(s Socket) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.live, s.(*fakeSocket))
}

// fakeSleep adds up the time the strategy would have slept.
type fakeSleep struct {
	mu    sync.Mutex
	total time.Duration
}

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.total += d
	f.mu.Unlock()
	return ctx.Err()
}

func TestChoose(t *testing.T) {
	cases := []struct {
		l, r     Firewall
		verified bool
		want     Strategy
		err      error
	}{
		{FirewallConsistent, FirewallConsistent, false, StrategyConsistent, nil},
		{FirewallOpen, FirewallConsistent, false, StrategyConsistent, nil},
		{FirewallOpen, FirewallOpen, false, StrategyConsistent, nil},
		{FirewallConsistent, FirewallRandom, true, StrategyRandomProbes, nil},
		{FirewallOpen, FirewallRandom, true, StrategyRandomProbes, nil},
		{FirewallRandom, FirewallConsistent, true, StrategyBirthday, nil},
		{FirewallConsistent, FirewallRandom, false, StrategyNone, ErrNotHolepunchable},
		{FirewallRandom, FirewallRandom, true, StrategyNone, ErrDoubleRandomized},
		{FirewallUnknown, FirewallConsistent, true, StrategyNone, ErrNotHolepunchable},
	}
	for _, c := range cases {
		got, err := Choose(c.l, c.r, c.verified)
		if got != c.want || !errors.Is(err, c.err) && !(err == nil && c.err == nil) {
			t.Errorf("Choose(%v, %v, %v) = %v, %v; want %v, %v", c.l, c.r, c.verified, got, err, c.want, c.err)
		}
	}
}

func TestConsistentRounds(t *testing.T) {
	s := &fakeSocket{}
	var fs fakeSleep
	verified := netip.MustParseAddrPort("198.18.0.1:4000")
	stale := netip.MustParseAddrPort("10.0.0.2:4000")
	err := Run(context.Background(), Config{
		Strategy: StrategyConsistent, Initiator: true, Socket: s, Sleep: fs.sleep,
		Remote: []Remote{{verified, true}, {stale, false}},
	})
	if !errors.Is(err, ErrPunchTimeout) {
		t.Fatalf("err = %v", err)
	}
	var v, u int
	for _, p := range s.sent {
		if p.ttl != DefaultTTL {
			t.Fatalf("ttl %d", p.ttl)
		}
		switch p.to {
		case verified:
			v++
		case stale:
			u++
		}
	}
	// Ten rounds; the unverified address only on rounds 4 and 8.
	if v != 10 || u != 2 || fs.total != 10*time.Second {
		t.Fatalf("verified %d, unverified %d, slept %v", v, u, fs.total)
	}
	// The server waits a second first.
	var fs2 fakeSleep
	Run(context.Background(), Config{Strategy: StrategyConsistent, Socket: &fakeSocket{}, Sleep: fs2.sleep, Remote: []Remote{{verified, true}}})
	if fs2.total != 11*time.Second {
		t.Fatalf("server slept %v", fs2.total)
	}
}

func TestRandomProbes(t *testing.T) {
	s := &fakeSocket{}
	var fs fakeSleep
	host := netip.MustParseAddrPort("198.18.0.9:1")
	err := Run(context.Background(), Config{
		Strategy: StrategyRandomProbes, Socket: s, Sleep: fs.sleep, Rand: rand.New(rand.NewPCG(1, 2)),
		Remote: []Remote{{netip.MustParseAddrPort("10.0.0.1:1"), false}, {host, true}},
	})
	if !errors.Is(err, ErrPunchTimeout) {
		t.Fatalf("err = %v", err)
	}
	ports := map[uint16]bool{}
	for _, p := range s.sent {
		if p.to.Addr() != host.Addr() || p.to.Port() < minRandomPort {
			t.Fatalf("probe to %v", p.to)
		}
		ports[p.to.Port()] = true
	}
	if len(s.sent) != randomTries || len(ports) < randomTries*9/10 {
		t.Fatalf("%d probes over %d ports", len(s.sent), len(ports))
	}
	// hyperdht's 1750 probes, four times as fast: 8.75 s.
	if fs.total != randomTries*5*time.Millisecond {
		t.Fatalf("the probes took %v", fs.total)
	}
	if err := Run(context.Background(), Config{Strategy: StrategyRandomProbes, Socket: s, Remote: []Remote{{host, false}}}); !errors.Is(err, ErrNotHolepunchable) {
		t.Fatalf("unverified random probes: %v", err)
	}
}

func TestBirthday(t *testing.T) {
	own := &fakeSocket{}
	pool := &fakePool{}
	var fs fakeSleep
	target := netip.MustParseAddrPort("198.18.0.5:7000")
	err := Run(context.Background(), Config{
		Strategy: StrategyBirthday, Socket: own, Pool: pool, Sleep: fs.sleep,
		Remote: []Remote{{target, true}},
	})
	if !errors.Is(err, ErrPunchTimeout) {
		t.Fatalf("err = %v", err)
	}
	if len(pool.acquired) != birthdaySockets-1 || len(pool.live) != 0 {
		t.Fatalf("acquired %d, still held %d", len(pool.acquired), len(pool.live))
	}
	// Every socket opened its mapping with a low TTL first.
	for _, s := range pool.acquired {
		if len(s.sent) == 0 || s.sent[0].ttl != LowTTL || s.sent[0].to != target {
			t.Fatalf("socket %d first send %+v", s.id, s.sent)
		}
	}
	// The first full cycle is low TTL, later ones normal.
	if own.sent[0].ttl != LowTTL || own.sent[len(own.sent)-1].ttl != DefaultTTL {
		t.Fatalf("own socket TTLs %v ... %v", own.sent[0], own.sent[len(own.sent)-1])
	}
}

// TestPuncherArrival checks that a punch arriving on a birthday socket
// stops the sends, is reported, and that socket is kept while the others
// go back to the pool.
func TestPuncherArrival(t *testing.T) {
	pool := &fakePool{}
	target := netip.MustParseAddrPort("198.18.0.5:7000")
	p := Start(context.Background(), Config{
		Strategy: StrategyBirthday, Socket: &fakeSocket{}, Pool: pool,
		Remote: []Remote{{target, true}},
	})
	var winner *fakeSocket
	deadline := time.Now().Add(5 * time.Second)
	for winner == nil && time.Now().Before(deadline) {
		pool.mu.Lock()
		if len(pool.acquired) > 10 {
			winner = pool.acquired[10]
		}
		pool.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	if winner == nil {
		t.Fatal("no sockets acquired")
	}
	from := netip.MustParseAddrPort("198.18.0.5:7001")
	p.Arrived(winner, from)
	p.Arrived(&fakeSocket{}, from) // a later punch is ignored
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := p.Wait(ctx)
	if err != nil || a.Socket != winner || a.From != from {
		t.Fatalf("Wait = %+v, %v", a, err)
	}
	p.Close()
	p.Close()
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if len(pool.live) != 1 || !pool.live[winner] {
		t.Fatalf("pool holds %d sockets after arrival; want only the winner", len(pool.live))
	}
}

func TestPuncherClose(t *testing.T) {
	p := Start(context.Background(), Config{Strategy: StrategyRandomProbes, Socket: &fakeSocket{},
		Remote: []Remote{{netip.MustParseAddrPort("198.18.0.5:7000"), true}}})
	p.Close()
	if _, err := p.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
}
