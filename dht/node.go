package dht

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/udx"
)

// Config configures a Node. Conn is required.
type Config struct {
	// Conn is the server socket and ClientConn the optional client socket
	// (see rpc.Config). The node never binds them. Connections (Dial,
	// Listen) run on Conn when it is a *udx.Socket, which the caller keeps
	// and closes, or a *net.UDPConn, which the node wraps in a udx socket
	// of its own and closes in Close. Any other PacketConn (a virtual
	// network's) carries DHT traffic only.
	Conn       rpc.PacketConn
	ClientConn rpc.PacketConn

	// Bootstrap lists bootstrap nodes ("host:port" or
	// "suggestedIP@hostname:port"). Nil means wire.BootstrapNodes; a non-nil
	// empty list means none (a first node), as `bootstrap: []` does.
	Bootstrap []string
	Nodes     []netip.AddrPort
	Mode      rpc.Mode
	// Bootstrapper makes this a bootstrap node (see rpc.Config).
	Bootstrapper  netip.AddrPort
	NotFirewalled bool

	// MaxSize and MaxAge size the storage caches as hyperdht's
	// maxSize/maxAge options (see wire.StoreConfig; defaults 65536 and
	// 20 min, mutable and immutable values 48 h unless MaxAge is set).
	MaxSize int
	MaxAge  time.Duration

	Logger *slog.Logger

	// KeyPair is the default identity of Dial; zero means a random one.
	KeyPair key.KeyPair

	// PunchSocket binds a fresh UDP socket for holepunching. Behind a
	// randomizing NAT, punching a consistent peer opens up to 256 of them
	// (hyperdht's birthday strategy); without PunchSocket we punch from
	// the main socket only, which rarely beats a randomizing NAT.
	PunchSocket func() (net.PacketConn, error)

	// LocalAddresses lists this host's addresses for the LAN shortcut;
	// nil reads the interfaces. Tests running a node in a network
	// namespace pass the namespace's address.
	LocalAddresses func() []netip.Addr

	// RPC, if set, supplies the remaining dht-rpc settings (concurrency,
	// rate limits, ...). Its sockets, bootstrap, mode and handler are
	// replaced by the fields above.
	RPC *rpc.Config
}

// Node is a HyperDHT node: a dht-rpc node that serves hyperdht's storage
// commands and keeps the router table. Connect and listen build on it.
type Node struct {
	rpc *rpc.DHT
	// self is rpc for the handler, which can run before New has stored
	// rpc (the loop starts inside rpc.New).
	self atomic.Pointer[rpc.DHT]
	conn rpc.PacketConn
	log  *slog.Logger

	// store is what this node keeps for others; it locks itself, since
	// the handler (rpc loop) and client calls (Unannounce) both use it.
	store *wire.Store

	// Connections: the udx socket the node's DHT traffic shares with its
	// streams (nil when Conn is not a UDP socket), the punch sender on it,
	// and the handlers of 1-byte holepunch datagrams.
	cfg      Config
	sock     *udx.Socket
	ownSock  bool
	ttl      *ttlSocket
	csock    *udx.Socket // the client socket, if any
	ownCSock bool
	cttl     *ttlSocket
	kp       key.KeyPair
	conns    connState
	stats    nodeStats

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New starts a node on the given sockets and begins bootstrapping.
func New(cfg Config) (*Node, error) {
	if cfg.Conn == nil {
		return nil, fmt.Errorf("%w: Conn is required", ErrBadConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{
		cfg:   cfg,
		log:   log,
		conn:  cfg.Conn,
		store: wire.NewStore(wire.StoreConfig{MaxSize: cfg.MaxSize, MaxAge: cfg.MaxAge}, time.Now()),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())

	n.kp = cfg.KeyPair
	if n.kp.Public.IsZero() {
		kp, err := key.Generate(nil)
		if err != nil {
			n.cancel()
			return nil, err
		}
		n.kp = kp
	}
	n.conns.init()
	conn, cconn := cfg.Conn, cfg.ClientConn
	switch c := cfg.Conn.(type) {
	case *udx.Socket:
		n.sock = c
	case *net.UDPConn:
		s, err := udx.NewSocket(c)
		if err != nil {
			n.cancel()
			return nil, err
		}
		n.sock, n.ownSock = s, true
	}
	if n.sock != nil {
		var pc net.PacketConn = n.sock
		if uc, ok := cfg.Conn.(*net.UDPConn); ok {
			pc = uc
		}
		n.ttl = newTTLSocket(n.sock, pc)
		conn = &punchConn{Socket: n.sock, onPunch: n.onPunch}
		// The client socket joins the same udx instance: while we are
		// firewalled, dht-rpc sends from it, so its mapping is the one
		// our NAT samples describe and the one we punch and connect from
		// (dht-rpc's `socket` getter).
		switch c := cfg.ClientConn.(type) {
		case *udx.Socket:
			n.csock = c
		case *net.UDPConn:
			s, err := n.sock.UDX().NewSocket(c)
			if err != nil {
				n.cancel()
				if n.ownSock {
					n.sock.Close()
				}
				return nil, err
			}
			n.csock, n.ownCSock = s, true
		}
		if n.csock != nil {
			var cpc net.PacketConn = n.csock
			if uc, ok := cfg.ClientConn.(*net.UDPConn); ok {
				cpc = uc
			}
			n.cttl = newTTLSocket(n.csock, cpc)
			cconn = &punchConn{Socket: n.csock, onPunch: n.onPunch}
		}
	}

	var rc rpc.Config
	if cfg.RPC != nil {
		rc = *cfg.RPC
	}
	rc.Conn, rc.ClientConn = conn, cconn
	rc.Bootstrap = cfg.Bootstrap
	if rc.Bootstrap == nil {
		rc.Bootstrap = wire.BootstrapNodes
	}
	rc.Nodes = cfg.Nodes
	rc.Mode = cfg.Mode
	rc.Bootstrapper = cfg.Bootstrapper
	rc.NotFirewalled = cfg.NotFirewalled
	rc.Handler = n.onRequest
	rc.FilterNode = filterNode
	rc.Logger = log
	d, err := rpc.New(rc)
	if err != nil {
		n.cancel()
		if n.ownCSock {
			n.csock.Close()
		}
		if n.ownSock {
			n.sock.Close()
		}
		return nil, err
	}
	n.rpc = d
	n.self.Store(d)
	return n, nil
}

// RPC returns the underlying dht-rpc node.
func (n *Node) RPC() *rpc.DHT { return n.rpc }

// WaitReady waits for the bootstrap to finish.
func (n *Node) WaitReady(ctx context.Context) error { return n.rpc.WaitReady(ctx) }

// State returns the dht-rpc state (id, ephemeral, firewalled, address).
func (n *Node) State() rpc.Snapshot { return n.rpc.State() }

// LocalAddr is the server socket's address.
func (n *Node) LocalAddr() netip.AddrPort {
	a, _ := netip.ParseAddrPort(n.conn.LocalAddr().String())
	return a
}

// Close stops the node: calls in flight fail, and every goroutine the node
// started has returned when Close returns. The sockets stay open.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		n.closeConns()
		n.rpc.Close()
		n.wg.Wait()
		if n.ownCSock {
			n.csock.Close()
		}
		if n.ownSock {
			n.sock.Close()
		}
	})
	return nil
}

// StoreStats returns what this node stores for others.
func (n *Node) StoreStats() wire.StoreStats { return n.store.Stats(time.Now()) }

// Forward returns the router entry a self-announce left for target: the
// server's address as this node saw it, where PEER_HANDSHAKE and
// PEER_HOLEPUNCH for target are to be relayed.
func (n *Node) Forward(target [32]byte) (wire.Forward, bool) {
	return n.store.Forward(target, time.Now())
}

// filterNode is hyperdht's filter of known-bad public nodes.
func filterNode(a netip.AddrPort) bool {
	h := a.Addr().String()
	switch {
	case a.Port() == 49738 && (h == "134.209.28.98" || h == "167.99.142.185"):
		return false
	case a.Port() == 9400 && h == "35.233.47.252":
		return false
	case h == "150.136.142.116":
		return false
	}
	return true
}

// onRequest is the rpc Handler; it runs on the rpc loop, and its now is
// the loop's: the store never reads the clock itself.
func (n *Node) onRequest(r *rpc.Request) bool {
	switch wire.Command(r.Command) {
	case wire.CmdPeerHandshake, wire.CmdPeerHolepunch:
		// Routed by every node, ephemeral or not; never UNKNOWN_COMMAND.
		n.onRouted(r)
		return true
	}
	d := n.self.Load()
	if d == nil {
		return false
	}
	id, persistent := d.ID()
	if !persistent || !wire.Command(r.Command).Storage() {
		return false
	}
	if r.Target == nil {
		return true // every storage command needs a target; silence
	}
	target := [32]byte(*r.Target)
	var token []byte
	if r.Token != nil {
		token = r.Token[:]
	}
	now := time.Now()
	var err error
	switch wire.Command(r.Command) {
	case wire.CmdFindPeer:
		r.Reply(n.store.FindPeer(target, now), nil)
	case wire.CmdLookup:
		r.Reply(n.store.Lookup(target, now), nil)
	case wire.CmdAnnounce:
		if err = n.store.Announce(target, token, r.Value, id, r.From, now); err == nil {
			r.Reply(nil, noTokenNoNodes)
		}
	case wire.CmdUnannounce:
		if err = n.store.Unannounce(target, token, r.Value, id, now); err == nil {
			r.Reply(nil, noTokenNoNodes)
		}
	case wire.CmdMutablePut:
		if err = n.store.MutablePut(target, token, r.Value, now); err == nil {
			r.Reply(nil, nil)
		} else if code, ok := wire.ReplyCode(err); ok {
			r.Error(uint64(code), nil)
		}
	case wire.CmdMutableGet:
		var v []byte
		if v, err = n.store.MutableGet(target, r.Value, now); err == nil {
			r.Reply(v, nil)
		}
	case wire.CmdImmutablePut:
		if err = n.store.ImmutablePut(target, token, r.Value, now); err == nil {
			r.Reply(nil, nil)
		}
	case wire.CmdImmutableGet:
		r.Reply(n.store.ImmutableGet(target, now), nil)
	default:
		// PLUGIN: no plugins are registered, and the reference stays
		// silent for an unknown plugin.
	}
	if err != nil {
		n.log.Debug("dht: request dropped", "cmd", wire.Command(r.Command), "from", r.From, "err", err)
	}
	return true
}

var noTokenNoNodes = &rpc.ReplyOptions{OmitToken: true, OmitCloserNodes: true}
