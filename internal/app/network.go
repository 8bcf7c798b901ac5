package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/tunnel"
)

// Network is what the tunnel commands need from the DHT: dial a key, listen
// on a key pair. Close ends every connection made through it.
type Network interface {
	// Dialer dials as kp; a zero kp means the network's own identity.
	// relay, when not nil, replaces the network's blind relays for these
	// connections (empty: none); see config.Relay.
	Dialer(kp key.KeyPair, relay []key.PublicKey) tunnel.Dialer
	// Listen announces kp; peers whose key allow does not hold are
	// refused during the handshake (an empty allow admits everyone).
	// relay as for Dialer.
	Listen(ctx context.Context, kp key.KeyPair, allow tunnel.AllowList, relay []key.PublicKey) (tunnel.PeerListener, error)
	Close() error
}

func (e *Env) openNetwork(ctx context.Context) (Network, error) {
	if e.OpenNetwork != nil {
		return e.OpenNetwork(ctx, e)
	}
	return OpenDHT(ctx, e)
}

// OpenDHT starts an ephemeral DHT node on a fresh UDP port, joined through
// env.Bootstrap.
func OpenDHT(ctx context.Context, env *Env) (Network, error) {
	n, err := startNode(ctx, env, 0, rpc.Adaptive)
	if err != nil {
		return nil, err
	}
	return (*dhtNetwork)(n), nil
}

// node is a dht.Node with the socket it runs on; Close closes both.
type node struct {
	*dht.Node
	udp, cudp *net.UDPConn
	relay     []key.PublicKey // --relay-through
	env       *Env
}

func (n *node) Close() error {
	err := n.Node.Close()
	n.udp.Close()
	n.cudp.Close()
	return err
}

// bindUDP opens the node's socket: dht.ListenUDP (all interfaces) unless
// env.Host names an address.
func (e *Env) bindUDP(port int) (*net.UDPConn, error) {
	var c *net.UDPConn
	var err error
	if e.Host == "" {
		c, err = dht.ListenUDP(port)
	} else {
		var ip netip.Addr
		ip, err = netip.ParseAddr(e.Host)
		if err != nil {
			return nil, fmt.Errorf("bind address %q is not an IP address", e.Host)
		}
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("UDP port %d is already in use", port)
	}
	if err != nil {
		return nil, fmt.Errorf("binding the DHT socket: %w", err)
	}
	return c, nil
}

// startNode binds port, starts a node in mode and waits until it has
// joined the network (bounded by env.JoinTimeout).
func startNode(ctx context.Context, env *Env, port int, mode rpc.Mode) (*node, error) {
	env.init()
	if err := checkBootstrap(ctx, env.Bootstrap); err != nil {
		return nil, err
	}
	udp, err := env.bindUDP(port)
	if err != nil {
		return nil, err
	}
	// A second socket for requests, as dht-rpc runs: a PING_NAT answered
	// on the server socket then proves it reachable unsolicited, and
	// while firewalled it is the socket we punch and connect from.
	cudp, err := env.bindUDP(0)
	if err != nil {
		udp.Close()
		return nil, err
	}
	nd, err := dht.New(dht.Config{
		Conn:       udp,
		ClientConn: cudp,
		Bootstrap:  env.Bootstrap,
		Mode:       mode,
		Logger:     env.logger.With("component", "dht"),
		// Behind a randomizing NAT, holepunching opens up to 256 sockets.
		PunchSocket: func() (net.PacketConn, error) { return env.bindUDP(0) },
	})
	if err != nil {
		cudp.Close()
		udp.Close()
		return nil, fmt.Errorf("starting the DHT node: %w", err)
	}
	n := &node{Node: nd, udp: udp, cudp: cudp, relay: env.RelayThrough, env: env}
	if err := join(ctx, env, n.Node); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// join waits for the node's bootstrap and checks that some node answered.
func join(ctx context.Context, env *Env, n *dht.Node) error {
	jctx, cancel := context.WithTimeout(ctx, env.joinTimeout())
	defer cancel()
	where := "the public HyperDHT bootstrap nodes"
	if env.Bootstrap != nil {
		where = strings.Join(env.Bootstrap, ",")
	}
	// Say what the wait is for once it is long enough to wonder.
	slow := time.AfterFunc(joinPatience, func() {
		env.logger.Warn("still joining the DHT: waiting for an answer from " + where + " (UDP to them may be blocked; --log-level debug shows more)")
	})
	defer slow.Stop()
	if err := n.WaitReady(jctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("could not join the DHT through %s within %v", where, env.joinTimeout())
	}
	if len(env.Bootstrap) > 0 || env.Bootstrap == nil {
		if n.State().Nodes == 0 {
			return fmt.Errorf("could not join the DHT: no node answered at %s", where)
		}
	}
	return nil
}

// joinPatience is how long a join runs before join says what it waits for.
const joinPatience = 2 * time.Second

// checkBootstrap fails at once for a --bootstrap entry the DHT could never
// use (no port, a host that does not resolve), which it would otherwise
// skip in silence and then wait for nothing. Entries are HOST:PORT, or
// hyperdht's SUGGESTED-IP@HOST:PORT.
func checkBootstrap(ctx context.Context, list []string) error {
	for _, e := range list {
		i := strings.LastIndexByte(e, ':')
		if i < 0 {
			return fmt.Errorf("--bootstrap %q: no port; want HOST:PORT", e)
		}
		host, ps := e[:i], e[i+1:]
		if p, err := strconv.Atoi(ps); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("--bootstrap %q: %q is not a UDP port; want HOST:PORT", e, ps)
		}
		if _, h, ok := strings.Cut(host, "@"); ok {
			host = h
		}
		host = strings.Trim(host, "[]")
		if _, err := netip.ParseAddr(host); err == nil {
			continue
		}
		if !isHostName(host) {
			return fmt.Errorf("--bootstrap %q: %q is neither an IP address nor a host name; want HOST:PORT", e, host)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := net.DefaultResolver.LookupNetIP(rctx, "ip4", host)
		cancel()
		if err != nil {
			return fmt.Errorf("--bootstrap %q: cannot resolve %s: %v", e, host, err)
		}
	}
	return nil
}

// isHostName checks a DNS name's syntax (letters, digits, '-', '_'
// between dots, no empty label), so that a typo fails without a lookup.
func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

type dhtNetwork node

func (n *dhtNetwork) Close() error { return (*node)(n).Close() }

func (n *dhtNetwork) Dialer(kp key.KeyPair, relay []key.PublicKey) tunnel.Dialer {
	random := kp.Public.IsZero()
	if random {
		// The node's own identity would do as well, but a refusal must
		// name the key that was refused.
		kp, _ = key.Generate(nil)
	}
	return dhtDialer{n: n.Node, kp: kp, random: random, relay: dht.RelayKeys(n.relays(relay)...)}
}

// relays is the blind-relay list for an entry: its own, or the network's.
func (n *dhtNetwork) relays(own []key.PublicKey) []key.PublicKey {
	if own != nil {
		return own
	}
	return n.relay
}

// listenTimeout bounds Listen's first announce.
const listenTimeout = 30 * time.Second

func (n *dhtNetwork) Listen(ctx context.Context, kp key.KeyPair, allow tunnel.AllowList, relay []key.PublicKey) (tunnel.PeerListener, error) {
	opts := &dht.ListenOptions{RelayThrough: dht.RelayKeys(n.relays(relay)...)}
	if len(allow) > 0 {
		opts.Firewall = func(remote key.PublicKey, addr netip.AddrPort) bool {
			if allow.Allows(remote) {
				return false
			}
			n.env.refusedClient(kp.Public, remote, addr)
			return true
		}
	}
	lctx, cancel := context.WithTimeout(ctx, listenTimeout)
	defer cancel()
	l, err := n.Node.Listen(lctx, kp, opts)
	if err != nil {
		return nil, err
	}
	return dhtListener{l}, nil
}

// dhtDialer adapts dht.Node.Dial to tunnel.Dialer.
type dhtDialer struct {
	n      *dht.Node
	kp     key.KeyPair
	random bool // kp is a random key for this run
	relay  dht.RelayThrough
}

func (d dhtDialer) Dial(ctx context.Context, remote key.PublicKey) (tunnel.PeerConn, error) {
	opts := &dht.DialOptions{KeyPair: d.kp, RelayThrough: d.relay}
	c, err := d.n.Dial(ctx, remote, opts)
	if err != nil {
		return nil, dialed(err, d.kp, d.random) // not c: a nil *Conn in an interface is not nil
	}
	return c, nil
}

// dhtListener adapts *dht.Listener to tunnel.PeerListener.
type dhtListener struct{ l *dht.Listener }

func (l dhtListener) Accept() (tunnel.PeerConn, error) {
	c, err := l.l.AcceptConn(context.Background())
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (l dhtListener) Close() error             { return l.l.Close() }
func (l dhtListener) PublicKey() key.PublicKey { return l.l.PublicKey() }

var (
	_ tunnel.PeerConn     = (*dht.Conn)(nil)
	_ tunnel.PeerListener = dhtListener{}
	_ tunnel.Dialer       = dhtDialer{}
)
