package keytunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
	"github.com/keytunnel/keytunnel/tunnel"
)

// Config says how a Node joins the network. The zero value joins the
// public HyperDHT with a fresh key, as the keytunnel command does.
type Config struct {
	// Bootstrap lists DHT bootstrap nodes (host:port). Nil means the
	// public HyperDHT bootstrap nodes; a testnet's list (Testnet) keeps
	// the node off the public network.
	Bootstrap []string
	// Seed is the 32-byte seed of the node's Ed25519 key pair, so that
	// its public key is the same on every run. Nil means a fresh key.
	Seed []byte
	// Relay, when set, reaches the DHT through a dht-relay
	// (tcp://host:port, ws://host:port or wss://host[:port]; keytunnel's
	// or @hyperswarm/dht-relay's) instead of UDP, for networks that block
	// UDP. The relay holds the node's secret key unless
	// RelayNonCustodial is set.
	Relay             string
	RelayNonCustodial bool
	// RelayThrough lists blind relays (keys of `keytunnel relay` or Node
	// blind-relay servers) that every connection pairs through in parallel
	// with hole punching; the relayed path carries the connection when no
	// direct one is found. Does not apply through a dht-relay.
	RelayThrough []string
	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// Host is the address the node's UDP sockets bind; empty means all
	// interfaces.
	Host string
	// JoinTimeout bounds New's wait for the network; zero means 30 s.
	JoinTimeout time.Duration
}

// Node is one key pair on the DHT. Its methods are safe for concurrent
// use.
type Node struct {
	kp    key.KeyPair
	fresh bool // kp was generated here: no other process can serve it
	nw    stack.Network
	log   *slog.Logger
	mux   *tunnel.Client // Dial's shared sessions
	raw   *tunnel.Client // Dial with Raw

	mu        sync.Mutex
	closed    bool
	listening bool
	listeners []*tunnel.Listener
}

// New starts a node and waits until it has joined the network (or reached
// the dht-relay), bounded by Config.JoinTimeout.
func New(cfg Config) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	kp, err := keyPair(cfg.Seed)
	if err != nil {
		return nil, err
	}
	var relays []key.PublicKey
	for _, s := range cfg.RelayThrough {
		k, err := stack.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("keytunnel: RelayThrough: %w", err)
		}
		relays = append(relays, k)
	}
	timeout := cfg.JoinTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	var nw stack.Network
	if cfg.Relay != "" {
		nw, err = stack.DialRelay(context.Background(), cfg.Relay, cfg.RelayNonCustodial, kp, log, timeout)
	} else {
		var sn *stack.Node
		sn, err = stack.Start(context.Background(), stack.Options{
			Bootstrap:    cfg.Bootstrap,
			Host:         cfg.Host,
			Mode:         rpc.Adaptive,
			KeyPair:      kp,
			RelayThrough: relays,
			Logger:       log,
			JoinTimeout:  timeout,
		})
		if sn != nil {
			nw = sn.Network()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("keytunnel: %w", err)
	}
	d := nw.Dialer(kp, nil)
	return &Node{
		kp:    kp,
		fresh: cfg.Seed == nil,
		nw:    nw,
		log:   log,
		mux:   tunnel.NewClient(d, tunnel.ForwardOptions{Logger: log}),
		raw:   tunnel.NewClient(d, tunnel.ForwardOptions{Logger: log, Raw: true}),
	}, nil
}

func keyPair(seed []byte) (key.KeyPair, error) {
	if seed == nil {
		return key.Generate(nil)
	}
	s, err := key.SeedFromBytes(seed)
	if err != nil {
		return key.KeyPair{}, fmt.Errorf("keytunnel: Seed: %w", err)
	}
	return key.FromSeed(s), nil
}

// PublicKey is the node's public key in hex: what peers Dial, and what
// their allow lists name.
func (n *Node) PublicKey() string { return n.kp.Public.String() }

// Option adjusts Listen, Dial, Expose or Forward.
type Option func(*options)

type options struct {
	allow    []string
	raw      bool
	replace  bool
	services [][2]string // name, target
}

// Allow admits only peers with these keys (hex or z32) to Listen or
// Expose; others are refused during the DHT handshake (their Dial fails
// with ErrRefused). Without Allow every key is admitted.
func Allow(keys ...string) Option {
	return func(o *options) { o.allow = append(o.allow, keys...) }
}

// Raw makes Dial and Forward speak as hypertele does, to hypertele and
// holesail servers: one DHT connection per conn, bytes unframed, no
// shared session. Listen and Expose need no option: they serve raw peers
// as well, telling them apart by their first bytes.
func Raw() Option { return func(o *options) { o.raw = true } }

// Replace makes Listen and Expose announce the node's key even when
// another running process serves it (a program started twice with the
// same Seed, a `keytunnel expose` of that key), taking the key over: new
// peers reach this node. A keytunnel process that is taken over says so,
// keeps its open connections and serves the key again once this node
// stops serving it. Without Replace, Listen and Expose fail with
// ErrServed then. A node without a Seed has a fresh key and never checks.
func Replace() Option { return func(o *options) { o.replace = true } }

// Service makes Expose serve target (PORT, HOST:PORT or unix:PATH, as
// for Expose's own target) under name as well: peers reach it with
// Dial or Forward of "KEY/name" (or `keytunnel forward KEY/name`), while
// the target given to Expose stays the default service that "KEY" alone,
// hypertele and holesail reach. Names are 1 to 63 bytes of a-z, 0-9, '-',
// '_' and '.'. Allow applies to every service.
func Service(name, target string) Option {
	return func(o *options) { o.services = append(o.services, [2]string{name, target}) }
}

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (o options) allowList() (tunnel.AllowList, error) {
	var keys []key.PublicKey
	for _, s := range o.allow {
		k, err := stack.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("keytunnel: Allow: %w", err)
		}
		keys = append(keys, k)
	}
	return tunnel.NewAllowList(keys...), nil
}

// announce claims the node's key and announces it on the DHT; release
// gives the claim back if the caller fails later.
func (n *Node) announce(ctx context.Context, o options) (tunnel.PeerListener, tunnel.AllowList, error) {
	allow, err := o.allowList()
	if err != nil {
		return nil, nil, err
	}
	n.mu.Lock()
	switch {
	case n.closed:
		n.mu.Unlock()
		return nil, nil, ErrClosed
	case n.listening:
		n.mu.Unlock()
		return nil, nil, ErrListening
	}
	n.listening = true
	n.mu.Unlock()
	pub := n.kp.Public.String()
	pl, err := n.nw.Listen(ctx, n.kp, stack.ListenOptions{
		Allow:   allow,
		Replace: o.replace,
		NewKey:  n.fresh,
		TookOver: func() {
			n.log.Info("keytunnel: took over "+pub+" from another running process: new peers reach this node", "public_key", pub)
		},
		OnReplaced: func(replaced bool) {
			if replaced {
				n.log.Warn("keytunnel: another process took over "+pub+": new peers reach it; this node keeps its connections and serves the key again once that process stops", "public_key", pub)
			} else {
				n.log.Info("keytunnel: serving "+pub+" again: the process that took it over has stopped", "public_key", pub)
			}
		},
	})
	if errors.Is(err, stack.ErrServed) {
		err = ErrServed
	}
	if err != nil {
		n.release()
		return nil, nil, fmt.Errorf("keytunnel: announcing %s: %w", n.kp.Public, err)
	}
	return pl, allow, nil
}

func (n *Node) release() {
	n.mu.Lock()
	n.listening = false
	n.mu.Unlock()
}

// Listen announces the node's key and returns a listener for the
// connections peers open to it. Accept returns one *Conn per stream a
// keytunnel peer opens (its Dial, or a connection to its `keytunnel
// forward`), and one per connection of a raw peer (hypertele, holesail);
// (*Conn).RemotePublicKey names the peer:
//
//	c, err := ln.Accept()
//	peer := c.(*keytunnel.Conn).RemotePublicKey()
//
// Close stops the announce and ends the connections the listener
// accepted. A node listens once at a time (ErrListening).
func (n *Node) Listen(opts ...Option) (net.Listener, error) {
	pl, allow, err := n.announce(context.Background(), collect(opts))
	if err != nil {
		return nil, err
	}
	tl := tunnel.Listen(pl, tunnel.ExposeOptions{Allow: allow, Logger: n.log})
	n.mu.Lock()
	n.listeners = append(n.listeners, tl)
	n.mu.Unlock()
	return &listener{tl: tl, n: n}, nil
}

type listener struct {
	tl   *tunnel.Listener
	n    *Node
	once sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	pc, err := l.tl.AcceptPeer()
	if err != nil {
		return nil, err
	}
	return newConn(pc, l.n.kp.Public), nil
}

func (l *listener) Close() error {
	err := l.tl.Close()
	l.once.Do(l.n.release)
	return err
}

func (l *listener) Addr() net.Addr { return Addr(l.n.PublicKey()) }

// Dial opens a connection to the peer listening on remote (hex or z32; or
// KEY/NAME for the service NAME of several behind KEY, see Service): a
// stream over the node's session to that peer, dialing the session first
// if there is none (or it was lost). With Raw, a DHT connection of its
// own. ctx bounds the dial; the connection outlives it. A name the peer
// does not serve, or whose allow list lacks our key, fails with
// ErrRefused and the peer's reason.
func (n *Node) Dial(ctx context.Context, remote string, opts ...Option) (net.Conn, error) {
	k, service, err := parseRemote(remote)
	if err != nil {
		return nil, err
	}
	c := n.mux
	if collect(opts).raw {
		c = n.raw
	}
	pc, err := c.OpenService(ctx, k, service)
	if err != nil {
		return nil, dialError(k.String(), err)
	}
	return newConn(pc, n.kp.Public), nil
}

// Expose serves the TCP service at target (PORT on 127.0.0.1, or
// HOST:PORT; or a Unix socket, unix:PATH) under the node's key until ctx ends, as `keytunnel expose`
// does: every connection a peer opens becomes a connection to target.
// Allow restricts the peers. It returns nil when ctx ends.
func (n *Node) Expose(ctx context.Context, target string, opts ...Option) error {
	addr, err := stack.Address("target", target, false)
	if err != nil {
		return fmt.Errorf("keytunnel: %w", err)
	}
	o := collect(opts)
	var svcs []tunnel.Service
	for _, s := range o.services {
		t, err := stack.Address("target of service "+s[0], s[1], false)
		if err != nil {
			return fmt.Errorf("keytunnel: %w", err)
		}
		svcs = append(svcs, tunnel.Service{Name: s[0], Target: t})
	}
	if err := tunnel.CheckServices(svcs); err != nil {
		return fmt.Errorf("keytunnel: %w", err)
	}
	pl, allow, err := n.announce(ctx, o)
	if err != nil {
		return err
	}
	defer n.release()
	for i := range svcs {
		svcs[i].Allow = allow
	}
	err = tunnel.Expose(ctx, pl, addr, tunnel.ExposeOptions{Allow: allow, Services: svcs, Logger: n.log})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Forward opens the local TCP address listen (PORT on 127.0.0.1, or
// HOST:PORT; or a Unix socket, unix:PATH, mode 0600) and carries every connection to it to the peer at remote
// (hex or z32, or KEY/NAME for a named service), as `keytunnel forward`
// does, until ctx ends. The peer is
// dialed on the first connection and again when the session is lost. It
// returns nil when ctx ends.
func (n *Node) Forward(ctx context.Context, remote, listen string, opts ...Option) error {
	k, service, err := parseRemote(remote)
	if err != nil {
		return err
	}
	addr, err := stack.Address("listen address", listen, false)
	if err != nil {
		return fmt.Errorf("keytunnel: %w", err)
	}
	ln, err := stack.Listen(addr, n.log)
	if err != nil {
		return fmt.Errorf("keytunnel: %w", err)
	}
	err = tunnel.Forward(ctx, n.nw.Dialer(n.kp, nil), k, ln, tunnel.ForwardOptions{Raw: collect(opts).raw, Service: service, Logger: n.log})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// parseRemote reads KEY or KEY/NAME (a named service behind KEY).
func parseRemote(remote string) (key.PublicKey, string, error) {
	ks, service, named := strings.Cut(remote, "/")
	k, err := stack.ParsePublicKey(ks)
	if err != nil {
		return k, "", fmt.Errorf("keytunnel: %w", err)
	}
	if named {
		if err := tunnel.CheckServiceName(service); err != nil {
			return k, "", fmt.Errorf("keytunnel: %q: %w", remote, err)
		}
	}
	return k, service, nil
}

// Close ends the node: its listeners, every connection made through it,
// and its place on the DHT. Expose and Forward calls return. It is
// idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	ls := n.listeners
	n.listeners = nil
	n.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	n.mux.Close()
	n.raw.Close()
	return n.nw.Close()
}

// Addr is a public key (hex) as a net.Addr: the addresses of a Listen and
// of its connections.
type Addr string

// Network is "keytunnel".
func (Addr) Network() string  { return "keytunnel" }
func (a Addr) String() string { return string(a) }

// Conn is a connection to a peer, as Listen's Accept and Dial return it.
type Conn struct {
	pc     tunnel.PeerConn
	local  Addr
	remote Addr
}

func newConn(pc tunnel.PeerConn, local key.PublicKey) *Conn {
	return &Conn{pc: pc, local: Addr(local.String()), remote: Addr(pc.RemotePublicKey().String())}
}

// RemotePublicKey is the peer's public key (hex), authenticated by the
// handshake.
func (c *Conn) RemotePublicKey() string { return string(c.remote) }

func (c *Conn) Read(b []byte) (int, error)  { return c.pc.Read(b) }
func (c *Conn) Write(b []byte) (int, error) { return c.pc.Write(b) }

// CloseWrite ends our direction: the peer reads EOF, and can still send.
func (c *Conn) CloseWrite() error { return c.pc.CloseWrite() }

// Close ends the connection in both directions.
func (c *Conn) Close() error { return c.pc.Close() }

// LocalAddr is our public key; RemoteAddr the peer's.
func (c *Conn) LocalAddr() net.Addr                { return c.local }
func (c *Conn) RemoteAddr() net.Addr               { return c.remote }
func (c *Conn) SetDeadline(t time.Time) error      { return c.pc.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.pc.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

var _ net.Conn = (*Conn)(nil)
