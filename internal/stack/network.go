package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/relay/dhtrelay"
	"github.com/keytunnel/keytunnel/tunnel"
)

// Network is what tunnels need from the DHT: dial a key, listen on a key
// pair. Close ends every connection made through it.
type Network interface {
	// Dialer dials as kp; a zero kp means the network's own identity.
	// relay, when not nil, replaces the network's blind relays for these
	// connections (empty: none).
	Dialer(kp key.KeyPair, relay []key.PublicKey) tunnel.Dialer
	// Listen announces kp and accepts the peers o admits.
	Listen(ctx context.Context, kp key.KeyPair, o ListenOptions) (tunnel.PeerListener, error)
	Close() error
}

// ListenOptions adjust Network.Listen.
type ListenOptions struct {
	// Allow: peers whose key it does not hold are refused during the
	// handshake; empty admits everyone.
	Allow tunnel.AllowList
	// Relay, when not nil, replaces the network's blind relays for this
	// listener's connections (empty: none).
	Relay []key.PublicKey
	// Refused, when set, hears of each client that Allow turns away
	// during the handshake, before any tunnel exists to say so.
	Refused func(client key.PublicKey, addr netip.AddrPort)
	// Replace announces even when another live process serves the key,
	// which then gets no new clients; without it Listen fails with
	// ErrServed. A record whose process is gone does not count (see
	// dht.ProbeTimeout).
	//
	// Listen still probes first, for at most replaceProbeWait: the probe
	// is how the running process learns at once that it was replaced
	// (its listener watches for its own key's handshakes, see
	// dht.ListenOptions.OnReplaced), where otherwise it would find out
	// at its next re-announce check, up to five minutes later.
	Replace bool
	// TookOver, when set, hears that Replace found another live process
	// serving the key.
	TookOver func()
	// NewKey: the key pair was made for this listener, so no other
	// process can serve it, and Listen announces without a probe.
	NewKey bool
	// OnReplaced hears when another process takes the key over and when
	// this one serves it again (dht.ListenOptions.OnReplaced). Through a
	// dht-relay it is never called: the relay's node holds the listener.
	OnReplaced func(replaced bool)
}

// probeTimeout bounds the check before announcing.
const probeTimeout = dht.ProbeTimeout

// replaceProbeWait bounds the probe of a Listen with Replace, whose answer
// changes nothing: a live holder answers within a lookup and two round
// trips (well under a second on a loopback testnet, 1-3 s on the public
// DHT), and a record whose process is gone would otherwise hold the start
// for all of probeTimeout.
const replaceProbeWait = 3 * time.Second

// ListenTimeout bounds Listen's first announce.
const ListenTimeout = 30 * time.Second

// firewall is the DHT listener's firewall for allow: strangers are
// rejected during the handshake, before the tunnel sees them, and
// refused (if set) hears of each.
func firewall(allow tunnel.AllowList, refused func(client key.PublicKey, addr netip.AddrPort)) dht.Firewall {
	if len(allow) == 0 {
		return nil
	}
	return func(remote key.PublicKey, addr netip.AddrPort) bool {
		if allow.Allows(remote) {
			return false
		}
		if refused != nil {
			refused(remote, addr)
		}
		return true
	}
}

// Network returns n as a Network; closing it closes n.
func (n *Node) Network() Network { return (*dhtNetwork)(n) }

type dhtNetwork Node

func (n *dhtNetwork) Close() error { return (*Node)(n).Close() }

func (n *dhtNetwork) Dialer(kp key.KeyPair, relay []key.PublicKey) tunnel.Dialer {
	return dialer[*dht.Conn]{dial: n.Node.Dial, wrap: n.withPath, opts: dht.DialOptions{KeyPair: kp, RelayThrough: dht.RelayKeys(n.relays(relay)...)}}
}

// DHTStats is the node's health (dht.Node.Stats).
func (n *dhtNetwork) DHTStats(ctx context.Context) (dht.Stats, error) { return n.Node.Stats(ctx) }

// withPath gives c the Path method that tunnel's Stats read.
func (n *dhtNetwork) withPath(c *dht.Conn) tunnel.PeerConn { return dhtConn{c, n.Node} }

// dhtConn is a DHT connection that can say how it reaches its peer.
type dhtConn struct {
	*dht.Conn
	n *dht.Node
}

// Path is "direct ADDR" or "relay KEY (ADDR)" (dht.Path), as it is now:
// a relayed connection may move to a direct path later.
func (c dhtConn) Path() string { return c.n.PathOf(c.Conn).String() }

// relays is the blind-relay list for an entry: its own, or the network's.
func (n *dhtNetwork) relays(own []key.PublicKey) []key.PublicKey {
	if own != nil {
		return own
	}
	return n.relay
}

func (n *dhtNetwork) Listen(ctx context.Context, kp key.KeyPair, o ListenOptions) (tunnel.PeerListener, error) {
	opts := &dht.ListenOptions{Firewall: firewall(o.Allow, o.Refused), RelayThrough: dht.RelayKeys(n.relays(o.Relay)...), OnReplaced: o.OnReplaced}
	lctx, cancel := context.WithTimeout(ctx, ListenTimeout+probeTimeout)
	defer cancel()
	switch {
	case o.NewKey:
	case o.Replace:
		pctx, cancel := context.WithTimeout(lctx, replaceProbeWait)
		h, _ := n.Node.Probe(pctx, kp, nil)
		cancel()
		if h == dht.HolderOther && o.TookOver != nil {
			o.TookOver()
		}
	default:
		h, err := n.Node.Probe(lctx, kp, nil)
		if err != nil {
			return nil, err
		}
		if h == dht.HolderOther {
			return nil, ErrServed
		}
	}
	l, err := n.Node.Listen(lctx, kp, opts)
	if err != nil {
		return nil, err
	}
	return listener[*dht.Conn]{l: l, wrap: n.withPath}, nil
}

// dialer adapts the Dial of a dht.Node or a dhtrelay.Client; wrap gives
// each connection its Path.
type dialer[C tunnel.PeerConn] struct {
	dial func(context.Context, key.PublicKey, *dht.DialOptions) (C, error)
	wrap func(C) tunnel.PeerConn
	opts dht.DialOptions
}

func (d dialer[C]) Dial(ctx context.Context, remote key.PublicKey) (tunnel.PeerConn, error) {
	opts := d.opts
	c, err := d.dial(ctx, remote, &opts)
	if err != nil {
		return nil, definitive(err) // not c: a nil *Conn in an interface is not nil
	}
	return d.wrap(c), nil
}

// definitive marks the dial failures that say the peer is unreachable
// for now, rather than that a packet was lost: no node holds its announce,
// or both NATs randomize and no relay was given. A Forwarder then fails
// local connections at once instead of dialing again for them.
func definitive(err error) error {
	if errors.Is(err, dht.ErrPeerNotFound) || errors.Is(err, dht.ErrDoubleRandomized) {
		return unreachableErr{err}
	}
	return err
}

// unreachableErr is a dial error that is also tunnel.ErrUnreachable, with
// the dial error's message.
type unreachableErr struct{ error }

func (e unreachableErr) Is(target error) bool { return target == tunnel.ErrUnreachable }
func (e unreachableErr) Unwrap() error        { return e.error }

// listener adapts a *dht.Listener or a *dhtrelay.Listener.
type listener[C tunnel.PeerConn] struct {
	l interface {
		AcceptConn(context.Context) (C, error)
		Close() error
		PublicKey() key.PublicKey
	}
	wrap func(C) tunnel.PeerConn
}

func (l listener[C]) Accept() (tunnel.PeerConn, error) {
	c, err := l.l.AcceptConn(context.Background())
	if err != nil {
		return nil, err
	}
	return l.wrap(c), nil
}

func (l listener[C]) Close() error             { return l.l.Close() }
func (l listener[C]) PublicKey() key.PublicKey { return l.l.PublicKey() }

// CheckRelayURL checks a dht-relay address: tcp://host:port, ws://host:port
// or wss://host[:port].
func CheckRelayURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--relay %q: want tcp://host:port, ws://host:port or wss://host[:port]", rawURL)
	}
	switch u.Scheme {
	case "tcp", "ws", "wss":
	default:
		return fmt.Errorf("--relay %q: scheme %q, want tcp, ws or wss", rawURL, u.Scheme)
	}
	if u.Scheme == "tcp" && u.Port() == "" {
		return fmt.Errorf("--relay %q: a tcp relay needs a port", rawURL)
	}
	return nil
}

// DialRelay reaches the DHT through the dht-relay at rawURL instead of
// UDP. Unless nonCustodial, the relay holds the keys of what runs
// through it. timeout bounds reaching the relay.
func DialRelay(ctx context.Context, rawURL string, nonCustodial bool, kp key.KeyPair, log *slog.Logger, timeout time.Duration) (Network, error) {
	if err := CheckRelayURL(rawURL); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dhtrelay.DialClient(dctx, rawURL, dhtrelay.ClientOptions{NonCustodial: nonCustodial, KeyPair: kp, Logger: log.With("component", "dht-relay")})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("could not reach the dht-relay at %s: %w", rawURL, err)
	}
	return relayNetwork{c: c, url: rawURL}, nil
}

type relayNetwork struct {
	c   *dhtrelay.Client
	url string
}

// relayConn is a connection through a dht-relay, whose path beyond the
// relay only the relay knows.
type relayConn struct {
	dhtrelay.Conn
	path string
}

func (c relayConn) Path() string { return c.path }

// RTT passes on the connection's RTT where it has one (a non-custodial
// secret stream does not measure one over the relay; this keeps the
// method should it).
func (c relayConn) RTT() time.Duration {
	if r, ok := c.Conn.(interface{ RTT() time.Duration }); ok {
		return r.RTT()
	}
	return 0
}

// LastReceive passes on when the connection last heard from its peer,
// which lets a Forwarder tell a vanished peer from a quiet one.
func (c relayConn) LastReceive() time.Time {
	if r, ok := c.Conn.(interface{ LastReceive() time.Time }); ok {
		return r.LastReceive()
	}
	return time.Time{}
}

func (n relayNetwork) withPath(c dhtrelay.Conn) tunnel.PeerConn {
	return relayConn{c, "dht-relay " + n.url}
}

func (n relayNetwork) Close() error { return n.c.Close() }

// Blind relays do not apply through a dht-relay: the relay node makes the
// connections, and the protocol has no field for them.
func (n relayNetwork) Dialer(kp key.KeyPair, _ []key.PublicKey) tunnel.Dialer {
	return dialer[dhtrelay.Conn]{dial: n.c.Dial, wrap: n.withPath, opts: dht.DialOptions{KeyPair: kp}}
}

func (n relayNetwork) Listen(ctx context.Context, kp key.KeyPair, o ListenOptions) (tunnel.PeerListener, error) {
	lctx, cancel := context.WithTimeout(ctx, ListenTimeout+probeTimeout)
	defer cancel()
	if !o.Replace && !o.NewKey {
		served, err := n.served(lctx, kp)
		if err != nil {
			return nil, err
		}
		if served {
			return nil, ErrServed
		}
	}
	l, err := n.c.Listen(lctx, kp, &dht.ListenOptions{Firewall: firewall(o.Allow, o.Refused)})
	if err != nil {
		return nil, err
	}
	return listener[dhtrelay.Conn]{l: l, wrap: n.withPath}, nil
}

// served is the probe of dht.Node.Probe through the relay, whose protocol
// has no half-dial: a dial as kp itself that connects, or that the server
// refuses, found a live process serving kp.
func (n relayNetwork) served(ctx context.Context, kp key.KeyPair) (bool, error) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := n.c.Dial(pctx, kp.Public, &dht.DialOptions{KeyPair: kp})
	switch {
	case err == nil:
		c.Close()
		return true, nil
	case errors.Is(err, dht.ErrRefused):
		return true, nil
	case ctx.Err() != nil:
		return false, ctx.Err()
	}
	return false, nil
}

var (
	_ Network = (*dhtNetwork)(nil)
	_ Network = relayNetwork{}
)
