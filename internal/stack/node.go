package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
)

// Options say how to start a Node. The zero value joins the public
// network from an ephemeral port on all interfaces.
type Options struct {
	// Bootstrap is the bootstrap list (host:port); nil means the public
	// HyperDHT nodes, a non-nil empty list none.
	Bootstrap []string
	// Host is the address the sockets bind; empty means all interfaces.
	Host string
	// Port is the server socket's UDP port; 0 picks one.
	Port int
	Mode rpc.Mode
	// KeyPair is the default identity of Dial; zero means a random one.
	KeyPair key.KeyPair
	// RelayThrough lists blind relays that connections pair through.
	RelayThrough []key.PublicKey
	Logger       *slog.Logger
	// JoinTimeout bounds joining; zero means 30 s.
	JoinTimeout time.Duration
	// Refused, when set, hears of every client a listener's allow list
	// turns away during the handshake, before any tunnel exists to say so.
	Refused func(service, client key.PublicKey, addr netip.AddrPort)
}

func (o *Options) joinTimeout() time.Duration {
	if o.JoinTimeout > 0 {
		return o.JoinTimeout
	}
	return 30 * time.Second
}

// Node is a dht.Node with the sockets it runs on; Close closes all.
type Node struct {
	*dht.Node
	udp, cudp *net.UDPConn
	relay     []key.PublicKey
	refused   func(service, client key.PublicKey, addr netip.AddrPort)
}

// Close stops the node and closes its sockets.
func (n *Node) Close() error {
	err := n.Node.Close()
	n.udp.Close()
	n.cudp.Close()
	return err
}

// BindUDP opens a UDP socket on host (all interfaces when empty) and port,
// with errors a user can act on.
func BindUDP(host string, port int) (*net.UDPConn, error) {
	var c *net.UDPConn
	var err error
	if host == "" {
		c, err = dht.ListenUDP(port)
	} else {
		var ip netip.Addr
		ip, err = netip.ParseAddr(host)
		if err != nil {
			return nil, fmt.Errorf("bind address %q is not an IP address", host)
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

// Start binds the sockets, starts a node and waits until it has joined the
// network (bounded by o.JoinTimeout).
func Start(ctx context.Context, o Options) (*Node, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := CheckBootstrap(ctx, o.Bootstrap); err != nil {
		return nil, err
	}
	n, err := Open(o)
	if err != nil {
		return nil, err
	}
	if err := join(ctx, o, n.Node); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Open binds the sockets and starts a node, which begins to join the
// network; unlike Start it does not wait for the join (keytunnel doctor
// watches it instead).
func Open(o Options) (*Node, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	udp, err := BindUDP(o.Host, o.Port)
	if err != nil {
		return nil, err
	}
	// A second socket for requests, as dht-rpc runs: a PING_NAT answered
	// on the server socket then proves it reachable unsolicited, and
	// while firewalled it is the socket we punch and connect from.
	cudp, err := BindUDP(o.Host, 0)
	if err != nil {
		udp.Close()
		return nil, err
	}
	nd, err := dht.New(dht.Config{
		Conn:       udp,
		ClientConn: cudp,
		Bootstrap:  o.Bootstrap,
		Mode:       o.Mode,
		KeyPair:    o.KeyPair,
		Logger:     o.Logger.With("component", "dht"),
		// Behind a randomizing NAT, holepunching opens up to 256 sockets.
		PunchSocket: func() (net.PacketConn, error) { return BindUDP(o.Host, 0) },
	})
	if err != nil {
		cudp.Close()
		udp.Close()
		return nil, fmt.Errorf("starting the DHT node: %w", err)
	}
	return &Node{Node: nd, udp: udp, cudp: cudp, relay: o.RelayThrough, refused: o.Refused}, nil
}

// join waits for the node's bootstrap and checks that some node answered.
func join(ctx context.Context, o Options, n *dht.Node) error {
	jctx, cancel := context.WithTimeout(ctx, o.joinTimeout())
	defer cancel()
	where := "the public HyperDHT bootstrap nodes"
	if o.Bootstrap != nil {
		where = strings.Join(o.Bootstrap, ",")
	}
	// Say what the wait is for once it is long enough to wonder.
	slow := time.AfterFunc(joinPatience, func() {
		o.Logger.Warn("still joining the DHT: waiting for an answer from " + where + " (UDP to them may be blocked; --log-level debug shows more)")
	})
	defer slow.Stop()
	if err := n.WaitReady(jctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("could not join the DHT through %s within %v", where, o.joinTimeout())
	}
	if len(o.Bootstrap) > 0 || o.Bootstrap == nil {
		if n.State().Nodes == 0 {
			return fmt.Errorf("could not join the DHT: no node answered at %s", where)
		}
	}
	return nil
}

// joinPatience is how long a join runs before join says what it waits for.
const joinPatience = 2 * time.Second

// CheckBootstrap fails at once for a bootstrap entry the DHT could never
// use (no port, a host that does not resolve), which it would otherwise
// skip in silence and then wait for nothing. Entries are HOST:PORT, or
// hyperdht's SUGGESTED-IP@HOST:PORT.
func CheckBootstrap(ctx context.Context, list []string) error {
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
