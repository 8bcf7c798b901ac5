package holepunch

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// The punch datagram is one zero byte. hyperdht sends it with a low TTL when
// it only needs to open a mapping in our own NAT (the packet dies before
// reaching the remote NAT, which would otherwise see an unsolicited packet
// and might blacklist the pair), and with the normal TTL when it must reach
// the peer.
const (
	LowTTL     = 5
	DefaultTTL = 64

	birthdaySockets   = 256
	consistentRounds  = 10
	consistentSpacing = time.Second
	randomTries       = 1750 // as hyperdht: 1750 probes, or 1750 birthday keepalives × 20 ms ≈ 35 s
	randomSpacing     = 20 * time.Millisecond
	minRandomPort     = 1000

	// probeSpacing paces the random probes, four times hyperdht's 20 ms.
	// A probe finds the peer when its random port is one of the peer's
	// birthday mappings: 256 of some 64,500 ports, 1 in 252, so the
	// expected wait is 252 probes, 5 s at hyperdht's pace and 1.3 s at
	// this one (median 3.5 s against 0.9 s; measured in
	// BenchmarkNATMatrixWAN). The number of probes is hyperdht's, so the
	// chance that the punch succeeds at all (1 - e^-6.9 = 99.9 %) and the
	// mappings the probes leave in our own NAT (1750) are the same; they
	// are sent in 8.75 s instead of 35 s, 200 a second, 29-byte
	// datagrams: 46 kbit/s. Pacing is ours alone, nothing on the wire
	// depends on it.
	probeSpacing = 5 * time.Millisecond
)

// Punch is the holepunch datagram.
var Punch = []byte{0}

// Socket is one UDP socket a Puncher sends from. Sockets stay the caller's:
// a Puncher never binds or closes one, it only asks a Pool for them.
type Socket interface {
	// SendTTL sends b to addr with the given IP TTL.
	SendTTL(b []byte, addr netip.AddrPort, ttl int) error
}

// Pool hands out fresh sockets for the birthday strategy, as hyperdht's
// socket pool does. Release returns one the Puncher no longer needs.
type Pool interface {
	Acquire() (Socket, error)
	Release(Socket)
}

// Strategy is how a pair of NATs is punched.
type Strategy int

const (
	// StrategyNone: the pair cannot be punched.
	StrategyNone Strategy = iota
	// StrategyConsistent: both mappings are predictable; each side sends
	// to every address the other reported, once a second, ten times.
	StrategyConsistent
	// StrategyRandomProbes: we are predictable, the peer randomizes its
	// port; we spray its verified host at 1750 random ports, one every
	// 5 ms (hyperdht: 20 ms), while its punches open our single mapping.
	StrategyRandomProbes
	// StrategyBirthday: we randomize and the peer is predictable; we open
	// 256 sockets (256 random mappings) each sending a low-TTL punch to
	// the peer, then keep cycling through them while the peer sprays our
	// host at random ports until a port meets a mapping (the birthday
	// paradox makes this likely within the 35 s budget).
	StrategyBirthday
)

func (s Strategy) String() string {
	return [...]string{"none", "consistent", "random-probes", "birthday"}[s]
}

// coerce treats OPEN as CONSISTENT: an open peer's address is as
// predictable as a consistent NAT's, which is all punching cares about.
func coerce(f Firewall) Firewall {
	if f == FirewallOpen {
		return FirewallConsistent
	}
	return f
}

// Choose returns the strategy for our NAT class and the peer's, as
// hyperdht's holepuncher picks it. verified says whether the peer proved
// one of its addresses (echoed our token from it): the random strategies
// aim at one host and need that host to be the peer's.
func Choose(local, remote Firewall, verified bool) (Strategy, error) {
	l, r := coerce(local), coerce(remote)
	switch {
	case l == FirewallConsistent && r == FirewallConsistent:
		return StrategyConsistent, nil
	case l == FirewallRandom && r == FirewallRandom:
		return StrategyNone, ErrDoubleRandomized
	case !verified:
		return StrategyNone, ErrNotHolepunchable
	case l == FirewallConsistent && r == FirewallRandom:
		return StrategyRandomProbes, nil
	case l == FirewallRandom && r == FirewallConsistent:
		return StrategyBirthday, nil
	}
	return StrategyNone, ErrNotHolepunchable
}

// Remote is one address the peer reported, and whether it was verified.
type Remote struct {
	Addr     netip.AddrPort
	Verified bool
}

// Config drives one punch.
type Config struct {
	Strategy  Strategy
	Initiator bool     // the client; the server waits a second before its first consistent round
	Remote    []Remote // what the peer reported (for random strategies, the verified host is used)
	Socket    Socket   // the puncher's own socket
	Pool      Pool     // for the birthday strategy
	// Sleep waits d or until ctx ends; nil uses a timer. Tests pass a fake
	// clock here.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand picks random ports; nil uses math/rand/v2's global source.
	Rand *rand.Rand
}

// Run sends the punches of cfg.Strategy until ctx ends (the caller cancels
// it when a punch arrives: see Puncher) or the strategy's budget is spent,
// then returns ErrPunchTimeout. Sockets acquired from the pool are released
// before Run returns (Start's pool wrapper keeps the one a punch arrived on).
func Run(ctx context.Context, cfg Config) error {
	sleep := cfg.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	intn := rand.IntN
	if cfg.Rand != nil {
		intn = cfg.Rand.IntN
	}
	switch cfg.Strategy {
	case StrategyConsistent:
		if !cfg.Initiator {
			// The server already sent one punch in the fast path.
			if err := sleep(ctx, consistentSpacing); err != nil {
				return err
			}
		}
		for tries := 1; tries <= consistentRounds; tries++ {
			for _, r := range cfg.Remote {
				// Unverified addresses get every fourth round only: they
				// are often stale LAN or mapped addresses.
				if !r.Verified && tries&3 != 0 {
					continue
				}
				cfg.Socket.SendTTL(Punch, r.Addr, DefaultTTL)
			}
			if err := sleep(ctx, consistentSpacing); err != nil {
				return err
			}
		}
	case StrategyRandomProbes:
		host, ok := verifiedHost(cfg.Remote)
		if !ok {
			return ErrNotHolepunchable
		}
		for range randomTries {
			port := uint16(minRandomPort + intn(65536-minRandomPort))
			cfg.Socket.SendTTL(Punch, netip.AddrPortFrom(host.Addr(), port), DefaultTTL)
			if err := sleep(ctx, probeSpacing); err != nil {
				return err
			}
		}
	case StrategyBirthday:
		target, ok := verifiedHost(cfg.Remote)
		if !ok {
			return ErrNotHolepunchable
		}
		socks := []Socket{cfg.Socket}
		defer func() {
			for _, s := range socks[1:] {
				cfg.Pool.Release(s)
			}
		}()
		for cfg.Pool != nil && len(socks) < birthdaySockets && ctx.Err() == nil {
			s, err := cfg.Pool.Acquire()
			if err != nil {
				break // punch with what we have
			}
			socks = append(socks, s)
			s.SendTTL(Punch, target, LowTTL)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
		lowRounds := 1
		for i, tries := 0, 0; tries < randomTries; tries++ {
			if i == len(socks) {
				i = 0
				if lowRounds > 0 {
					lowRounds--
				}
			}
			ttl := DefaultTTL
			if lowRounds > 0 {
				ttl = LowTTL
			}
			socks[i].SendTTL(Punch, target, ttl)
			i++
			if err := sleep(ctx, randomSpacing); err != nil {
				return err
			}
		}
	default:
		return ErrNotHolepunchable
	}
	return ErrPunchTimeout
}

func verifiedHost(rs []Remote) (netip.AddrPort, bool) {
	for _, r := range rs {
		if r.Verified {
			return r.Addr, true
		}
	}
	return netip.AddrPort{}, false
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Puncher runs one strategy in the background and reports the first punch
// that arrives on any of its sockets. It owns its goroutine: Close cancels
// and waits.
type Puncher struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done closes

	once    sync.Once
	arrived chan struct{}
	arrival Arrival // set before arrived closes
}

// Arrival is a punch that reached us: the socket it came in on and the
// peer's address as our socket sees it, the path to connect on.
type Arrival struct {
	Socket Socket
	From   netip.AddrPort
}

// Start begins punching with cfg in a goroutine the Puncher owns.
func Start(ctx context.Context, cfg Config) *Puncher {
	ctx, cancel := context.WithCancel(ctx)
	p := &Puncher{cancel: cancel, done: make(chan struct{}), arrived: make(chan struct{})}
	if cfg.Pool != nil {
		cfg.Pool = keepPool{cfg.Pool, p}
	}
	go func() {
		defer close(p.done)
		p.err = Run(ctx, cfg)
	}()
	return p
}

// keepPool releases every birthday socket but the one the connection
// arrived on, which the caller now owns.
type keepPool struct {
	Pool
	p *Puncher
}

func (k keepPool) Release(s Socket) {
	select {
	case <-k.p.arrived:
		if k.p.arrival.Socket == s {
			return
		}
	default:
	}
	k.Pool.Release(s)
}

// Arrived is called by the socket owner when a 1-byte punch arrives on
// socket s from addr. The first call wins and stops the sends; the socket
// is then the caller's (it is not released to the pool).
func (p *Puncher) Arrived(s Socket, from netip.AddrPort) {
	p.once.Do(func() {
		p.arrival = Arrival{Socket: s, From: from}
		close(p.arrived)
		p.cancel()
	})
}

// Wait returns the first arrival, or the reason punching ended without one.
func (p *Puncher) Wait(ctx context.Context) (Arrival, error) {
	select {
	case <-p.arrived:
		return p.arrival, nil
	case <-p.done:
		select {
		case <-p.arrived:
			return p.arrival, nil
		default:
		}
		if p.err == context.Canceled {
			return Arrival{}, ErrClosed
		}
		return Arrival{}, p.err
	case <-ctx.Done():
		return Arrival{}, ctx.Err()
	}
}

// Close stops punching and waits for the sender to end. It is idempotent.
func (p *Puncher) Close() error {
	p.cancel()
	<-p.done
	return nil
}
