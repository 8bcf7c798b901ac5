package rpc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// PacketConn is what a DHT reads datagrams from and sends them with: the
// part of net.PacketConn it uses. A *net.UDPConn satisfies it; so can a
// demultiplexer that shares one UDP socket with udx and hands over only
// the datagrams that are not udx packets. The DHT never closes it; Close
// unblocks the reader with SetReadDeadline and resets the deadline after.
type PacketConn interface {
	ReadFrom(p []byte) (n int, addr net.Addr, err error)
	WriteTo(p []byte, addr net.Addr) (n int, err error)
	LocalAddr() net.Addr
	SetReadDeadline(t time.Time) error
}

// Mode says when a node includes its id and becomes routable.
type Mode int

const (
	// Adaptive (the reference's default, opts.ephemeral unset): ephemeral
	// at first, persistent after ~20 minutes of a stable, reachable,
	// consistently mapped address.
	Adaptive Mode = iota
	// Ephemeral never turns persistent (opts.ephemeral = true).
	Ephemeral
	// Persistent turns persistent as soon as the address is consistent and
	// the firewall check passes (opts.ephemeral = false).
	Persistent
)

// Config configures a DHT. Conn is required; everything else has the
// reference's defaults.
type Config struct {
	// Conn is the server socket: replies to requests that arrived on it,
	// requests once the node is known not to be firewalled, and the
	// socket PING_NAT asks peers to reach.
	Conn PacketConn
	// ClientConn is the socket requests are sent from while firewalled.
	// Nil means Conn serves both roles; the firewall check then cannot
	// tell a reply to a request from a cold datagram, so a node behind a
	// consistent NAT may conclude it is reachable when it is not.
	ClientConn PacketConn

	// Bootstrap lists bootstrap nodes as "host:port" or hyperdht's
	// "suggestedIP@hostname:port". Hostnames are resolved (IPv4) once.
	Bootstrap []string
	// Nodes seeds the routing table (opts.nodes).
	Nodes []netip.AddrPort

	Mode Mode
	// Bootstrapper, when valid, makes this node a bootstrap node as
	// DHT.bootstrapper(port, host): persistent, not firewalled, with its
	// public address pre-seeded to this value. Its port must be Conn's.
	Bootstrapper netip.AddrPort
	// NotFirewalled starts the node as not firewalled (opts.firewalled=false).
	NotFirewalled bool
	// NoQuickFirewall disables the PING_NAT probe during bootstrap.
	NoQuickFirewall bool

	Concurrency  int           // query concurrency, default 10
	MaxWindow    int           // congestion window, default 80
	MaxPingDelay time.Duration // DELAYED_PING bound, default 10 s
	// DownHintsRateLimit caps DOWN_HINTs per tick (default 50); negative
	// means unlimited. NoDownHints disables them.
	DownHintsRateLimit int
	NoDownHints        bool

	// Handler gets every non-internal request. It runs on the node's loop
	// goroutine and must not block or call the DHT's blocking methods;
	// Request.Reply/Error/Relay may be called from it or later from any
	// goroutine. Returning false makes the node reply UNKNOWN_COMMAND.
	Handler func(*Request) bool
	// FilterNode, if set, must return true for a node to be added to the
	// table or visited by queries (hyperdht's filterNode).
	FilterNode func(netip.AddrPort) bool
	// Events, if set, is called on the loop goroutine on state changes.
	// It must not block.
	Events func(Event)

	// RequestRate and RequestBurst bound incoming requests per Source
	// address (default 100/s, burst 200); a negative rate disables it.
	RequestRate  float64
	RequestBurst int

	Logger *slog.Logger
	Rand   io.Reader // default crypto/rand

	// test knobs
	tickInterval  time.Duration
	drainInterval time.Duration
}

// EventKind names a state change reported through Config.Events.
type EventKind int

const (
	EventReady      EventKind = iota // bootstrapped
	EventPersistent                  // the node now sends its id
	EventEphemeral                   // the node went ephemeral again (wakeup)
	EventNATUpdate                   // the sampled public address changed
	EventAddNode
	EventRemoveNode
)

// Event is a state change.
type Event struct {
	Kind EventKind
	Addr netip.AddrPort // NATUpdate: new address (port 0 = randomised); Add/RemoveNode: the node
}

// Protocol constants of dht-rpc 6.27.0.
const (
	tickInterval     = 5000 * time.Millisecond
	drainInterval    = 750 * time.Millisecond
	sleepingInterval = 3 * tickInterval
	stableTicks      = 240
	moreStableTicks  = 3 * stableTicks
	refreshTicks     = 60
	recentNode       = 12
	oldNode          = 360
	defaultRetries   = 3
	queryRetries     = 5
	attemptTimeout   = time.Second
)

// Internal command ids.
const (
	CmdPing        = 0
	CmdPingNAT     = 1
	CmdFindNode    = 2
	CmdDownHint    = 3
	CmdDelayedPing = 4
)

const (
	sockServer = 0
	sockClient = 1
)

type datagram struct {
	sock int
	b    []byte
	from netip.AddrPort
}

// DHT is a dht-rpc node. All protocol state is owned by one loop
// goroutine; the exported methods are safe for concurrent use.
type DHT struct {
	cfg   Config
	log   *slog.Logger
	conns [2]PacketConn
	same  bool // one socket in both roles

	in      chan datagram
	mu      sync.Mutex
	dead    bool
	cmds    []func(now time.Time)
	wake    chan struct{}
	closing chan struct{}
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	ready   chan struct{}
	snap    atomic.Pointer[Snapshot]

	// ---- loop-owned state below ----
	now          time.Time
	tm           timers
	tbl          *table
	nodes        nodeSet
	inflight     map[uint16]*outReq
	rtts         map[netip.AddrPort]time.Duration // last round trip per node, from requests sent once (queryFirstTimeout)
	rttAll       time.Duration                    // smoothed over every node's, for those not heard from yet
	tid          uint16
	pending      []*outReq // waiting for the congestion window
	cong         congestion
	secrets      tokenSecrets
	rotate       int
	nat          *natSampler
	limiter      *RateLimiter
	firewalled   bool
	ephemeral    bool
	adaptive     bool
	forcePers    bool
	bootstrapped bool
	closedLoop   bool

	bootstrapNodes []netip.AddrPort
	// quietBoot: bootstrap nodes that did not answer the join; queries
	// seed only the others while any answered.
	quietBoot      map[netip.AddrPort]bool
	nonPersSamples []netip.AddrPort
	fwWatch        map[netip.Addr]struct{} // hosts seen on the server socket during a firewall check
	fwChecks       int

	tick, lastTickTick int
	lastTick           time.Time
	refreshTicks       int
	stableTicksLeft    int
	lastHost           netip.Addr
	repinging, checks  int
	downHintsThisTick  int
	delayed            int
	queries            map[*Query]struct{}
	stats              Stats
}

// Stats counts traffic; read with DHT.Stats.
type Stats struct {
	Requests, Responses, Timeouts, Retries uint64
	Dropped                                uint64 // incoming requests over the rate limit
	Malformed                              uint64
	QueriesActive, QueriesTotal            int
}

// Snapshot is the node's state as last published by the loop.
type Snapshot struct {
	ID           ID   // routing-table id (derived from the address once known)
	Ephemeral    bool // true while the node does not send its id
	Firewalled   bool
	Bootstrapped bool
	Host         netip.Addr // sampled public host, invalid if unknown
	Port         uint16     // sampled public port, 0 if unknown or randomised
	Nodes        int        // routing table size
	Firewall     Firewall
}

// Firewall classifies the node's reachability as hyperdht does (its
// FIREWALL constants use the same values).
type Firewall int

const (
	FirewallUnknown    Firewall = 0 // no consistent sample yet
	FirewallOpen       Firewall = 1 // not firewalled: reachable at its address
	FirewallConsistent Firewall = 2 // behind a NAT that keeps the port
	FirewallRandom     Firewall = 3 // behind a NAT that changes ports per peer
)

// New starts a node on the given sockets and begins bootstrapping.
func New(cfg Config) (*DHT, error) {
	if cfg.Conn == nil {
		return nil, fmt.Errorf("%w: Conn is nil", ErrBadConfig)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 10
	}
	if cfg.MaxWindow <= 0 {
		cfg.MaxWindow = 80
	}
	if cfg.MaxPingDelay <= 0 {
		cfg.MaxPingDelay = 10 * time.Second
	}
	if cfg.DownHintsRateLimit == 0 {
		cfg.DownHintsRateLimit = 50
	}
	if cfg.RequestRate == 0 {
		cfg.RequestRate = 100
	}
	if cfg.RequestBurst <= 0 {
		cfg.RequestBurst = 200
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.tickInterval <= 0 {
		cfg.tickInterval = tickInterval
	}
	if cfg.drainInterval <= 0 {
		cfg.drainInterval = drainInterval
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	d := &DHT{
		cfg:      cfg,
		log:      lg,
		in:       make(chan datagram, 512),
		wake:     make(chan struct{}, 1),
		closing:  make(chan struct{}),
		closed:   make(chan struct{}),
		ready:    make(chan struct{}),
		inflight: make(map[uint16]*outReq),
		rtts:     make(map[netip.AddrPort]time.Duration),
		nat:      &natSampler{},
		limiter:  NewRateLimiter(cfg.RequestRate, cfg.RequestBurst, 16384),
		queries:  make(map[*Query]struct{}),
	}
	d.conns[sockServer] = cfg.Conn
	d.conns[sockClient] = cfg.ClientConn
	if cfg.ClientConn == nil {
		d.conns[sockClient] = cfg.Conn
		d.same = true
	}
	d.cong.max = cfg.MaxWindow
	d.rotate = 10
	var id ID
	d.random(id[:])
	d.tbl = newTable(id, K)
	d.tbl.onFull = d.onFullRow
	var tb [2]byte
	d.random(tb[:])
	d.tid = uint16(tb[0]) | uint16(tb[1])<<8
	d.firewalled = !cfg.NotFirewalled
	d.ephemeral = true
	d.forcePers = cfg.Mode == Persistent
	d.adaptive = cfg.Mode == Adaptive
	if cfg.Bootstrapper.IsValid() {
		d.forcePers, d.adaptive, d.firewalled = true, false, false
		d.nat.add(cfg.Bootstrapper)
	}
	d.tick = randomOffset(d, 100)
	d.refreshTicks = randomOffset(d, refreshTicks)
	if d.adaptive {
		d.stableTicksLeft = stableTicks
	}
	d.publish()

	now := time.Now()
	d.lastTick = now
	for i := len(cfg.Nodes) - 1; i >= 0; i-- {
		d.addNodeAddr(cfg.Nodes[i])
	}
	d.scheduleTick(now)
	d.scheduleDrain(now)

	readers := 2
	if d.same {
		readers = 1
	}
	d.wg.Add(1 + readers)
	for i := range readers {
		go d.reader(i)
	}
	go d.loop()
	// Resolve bootstrap nodes off the loop, then bootstrap on it.
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		nodes := d.resolveBootstrap(cfg.Bootstrap)
		d.post(func(now time.Time) {
			d.bootstrapNodes = nodes
			d.startBootstrap(now)
		})
	}()
	return d, nil
}

func randomOffset(d *DHT, n int) int {
	var b [2]byte
	d.random(b[:])
	r := float64(uint16(b[0])|uint16(b[1])<<8) / 65536
	return n - int(r*0.5*float64(n))
}

func (d *DHT) random(b []byte) {
	if _, err := io.ReadFull(d.cfg.Rand, b); err != nil {
		panic("rpc: random source failed: " + err.Error())
	}
}

// reader pumps datagrams from one socket into the loop. A full queue drops
// datagrams, as a full socket buffer would.
func (d *DHT) reader(i int) {
	defer d.wg.Done()
	c := d.conns[i]
	buf := make([]byte, 64*1024)
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			select {
			case <-d.closing:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				d.log.Debug("dht-rpc socket closed", "err", err)
				return
			}
			d.log.Debug("dht-rpc read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		from, ok := addrPort(addr)
		if !ok || n < 2 {
			continue
		}
		b := make([]byte, n)
		copy(b, buf[:n])
		select {
		case d.in <- datagram{sock: i, b: b, from: from}:
		case <-d.closing:
			return
		default:
		}
	}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch v := a.(type) {
	case *net.UDPAddr:
		ap = v.AddrPort()
	default:
		p, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return ap, false
		}
		ap = p
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return ap, ap.Addr().Is4() && ap.Port() != 0
}

// post queues fn to run on the loop. It never blocks, so it is safe from
// the loop itself (a Handler) and from any goroutine.
func (d *DHT) post(fn func(now time.Time)) bool {
	d.mu.Lock()
	if d.dead {
		d.mu.Unlock()
		return false
	}
	d.cmds = append(d.cmds, fn)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return true
}

func (d *DHT) isClosing() bool {
	select {
	case <-d.closing:
		return true
	default:
		return false
	}
}

// call runs fn on the loop and waits for it.
func (d *DHT) call(ctx context.Context, fn func(now time.Time)) error {
	done := make(chan struct{})
	if !d.post(func(now time.Time) { fn(now); d.publish(); close(done) }) {
		return ErrClosed
	}
	select {
	case <-done:
		return nil
	case <-d.closed:
		select {
		case <-done:
			return nil
		default:
		}
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *DHT) loop() {
	defer d.wg.Done()
	defer close(d.closed)
	tmr := time.NewTimer(time.Hour)
	defer tmr.Stop()
	for {
		if at, ok := d.tm.next(); ok {
			tmr.Reset(time.Until(at))
		} else {
			tmr.Reset(time.Hour)
		}
		select {
		case dg := <-d.in:
			d.now = time.Now()
			d.onMessage(d.now, dg)
			// take a bounded batch of what else is queued, so timers and
			// commands still run under a flood
			for range 255 {
				select {
				case dg := <-d.in:
					d.onMessage(d.now, dg)
					continue
				default:
				}
				break
			}
		case <-d.wake:
		case <-tmr.C:
		case <-d.closing:
			d.shutdown(time.Now())
			return
		}
		d.now = time.Now()
		d.runCmds(d.now)
		d.tm.fire(d.now)
		d.runCmds(d.now)
		d.publish()
	}
}

func (d *DHT) runCmds(now time.Time) {
	for {
		d.mu.Lock()
		cmds := d.cmds
		d.cmds = nil
		d.mu.Unlock()
		if len(cmds) == 0 {
			return
		}
		for _, fn := range cmds {
			fn(now)
		}
	}
}

func (d *DHT) publish() {
	s := &Snapshot{
		ID: d.tbl.id, Ephemeral: d.ephemeral, Firewalled: d.firewalled, Bootstrapped: d.bootstrapped,
		Host: d.nat.host, Port: d.nat.port, Nodes: d.tbl.size,
	}
	switch {
	case !d.firewalled:
		s.Firewall = FirewallOpen
	case d.nat.host.IsValid() && d.nat.port != 0:
		s.Firewall = FirewallConsistent
	case d.nat.host.IsValid():
		s.Firewall = FirewallRandom
	}
	if old := d.snap.Load(); old != nil && *old == *s {
		return
	}
	d.snap.Store(s)
}

func (d *DHT) emit(kind EventKind, addr netip.AddrPort) {
	if d.cfg.Events != nil {
		d.cfg.Events(Event{Kind: kind, Addr: addr})
	}
}

// shutdown destroys every in-flight request and query, on the loop.
func (d *DHT) shutdown(now time.Time) {
	d.closedLoop = true
	d.runCmds(now) // let queued cancellations run
	for q := range d.queries {
		q.finish(now, ErrClosed)
	}
	for _, r := range d.inflight {
		d.destroyReq(now, r, ErrClosed)
	}
	d.pending = nil
	d.publish()
}

// Close stops the node: in-flight requests and queries fail with
// ErrClosed, and every goroutine it started has returned when Close
// returns. The sockets are left open. Close is idempotent.
func (d *DHT) Close() error {
	d.once.Do(func() {
		d.mu.Lock()
		close(d.closing)
		d.mu.Unlock()
		for i, c := range d.conns {
			if i == sockClient && d.same {
				break
			}
			_ = c.SetReadDeadline(time.Unix(1, 0))
		}
		d.wg.Wait()
		for i, c := range d.conns {
			if i == sockClient && d.same {
				break
			}
			_ = c.SetReadDeadline(time.Time{})
		}
		// Run what was posted while the loop was ending (requests and
		// queries then fail with ErrClosed); later posts are refused.
		d.mu.Lock()
		d.dead = true
		cmds := d.cmds
		d.cmds = nil
		d.mu.Unlock()
		for _, fn := range cmds {
			fn(time.Now())
		}
	})
	return nil
}

// State returns the node's state as last published by its loop. It never
// blocks and is safe to call from a Handler.
func (d *DHT) State() Snapshot { return *d.snap.Load() }

// ID returns the node id peers see, and false while the node is ephemeral.
func (d *DHT) ID() (ID, bool) {
	s := d.snap.Load()
	return s.ID, !s.Ephemeral
}

// Ready is closed once the bootstrap procedure has finished.
func (d *DHT) Ready() <-chan struct{} { return d.ready }

// WaitReady waits for the bootstrap to finish.
func (d *DHT) WaitReady(ctx context.Context) error {
	select {
	case <-d.ready:
		return nil
	case <-d.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RemoteAddress returns the node's public address if it is reachable
// there: known host and port, not firewalled, and the port equal to the
// server socket's (the reference's remoteAddress()).
func (d *DHT) RemoteAddress() (netip.AddrPort, bool) {
	s := d.snap.Load()
	if !s.Host.IsValid() || s.Port == 0 || s.Firewalled {
		return netip.AddrPort{}, false
	}
	if d.serverPort() != s.Port {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(s.Host, s.Port), true
}

// Stats returns traffic counters.
func (d *DHT) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := d.call(ctx, func(time.Time) {
		s = d.stats
		s.Dropped = d.limiter.Dropped()
	})
	return s, err
}

// Nodes returns the routing table's nodes, most recently seen first, up to
// limit (0 = all). Not for use from a Handler.
func (d *DHT) Nodes(ctx context.Context, limit int) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	err := d.call(ctx, func(time.Time) {
		for n := d.nodes.latest; n != nil && (limit <= 0 || len(out) < limit); n = n.prev {
			out = append(out, n.addr)
		}
	})
	return out, err
}

// AddNode adds a node to the routing table with its address-derived id.
func (d *DHT) AddNode(addr netip.AddrPort) {
	d.post(func(time.Time) { d.addNodeAddr(addr) })
}

// serverPort returns the local port of the server socket.
func (d *DHT) serverPort() uint16 {
	switch a := d.conns[sockServer].LocalAddr().(type) {
	case *net.UDPAddr:
		return uint16(a.Port)
	default:
		if p, err := netip.ParseAddrPort(a.String()); err == nil {
			return p.Port()
		}
	}
	return 0
}
