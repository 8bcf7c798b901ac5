package dht

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/keytunnel/keytunnel/dht/rpc"
)

// TestnetOptions adjusts Testnet.
type TestnetOptions struct {
	// Host is the address the nodes bind and announce; default 127.0.0.1.
	Host string
	// Port is the first (bootstrap) node's port; 0 picks one.
	Port int
	// Bootstrap, if set, joins an existing network instead of starting a
	// bootstrap node: all n nodes bootstrap from it.
	Bootstrap []string
	// Listen opens a node's socket (for in-memory networks); the default
	// binds UDP on Host. A zero port means any.
	Listen func(netip.AddrPort) (rpc.PacketConn, error)
	// Parallel starts the non-bootstrap nodes this many at a time
	// (default 1, as testnet.js does).
	Parallel int
	Logger   *slog.Logger
	// Config, if set, is the template for every node's Config (sockets,
	// bootstrap and mode are filled in).
	Config *Config
}

// TestNetwork is a running testnet.
type TestNetwork struct {
	Nodes []*Node
	// Bootstrap is the list other nodes join with ("host:port").
	Bootstrap []string

	mu    sync.Mutex
	conns []rpc.PacketConn
	once  sync.Once
}

// Testnet starts a local network as hyperdht's testnet.js: a persistent,
// unfirewalled first node that is everyone's bootstrap, then n-1 more
// persistent nodes, each started once the previous is bootstrapped.
// Close stops them all.
func Testnet(ctx context.Context, n int, opts *TestnetOptions) (*TestNetwork, error) {
	var o TestnetOptions
	if opts != nil {
		o = *opts
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	host, err := netip.ParseAddr(o.Host)
	if err != nil || !host.Is4() {
		return nil, fmt.Errorf("%w: testnet host %q is not IPv4", ErrBadConfig, o.Host)
	}
	if o.Listen == nil {
		o.Listen = func(a netip.AddrPort) (rpc.PacketConn, error) {
			return net.ListenUDP("udp4", net.UDPAddrFromAddrPort(a))
		}
	}
	if o.Parallel <= 0 {
		o.Parallel = 1
	}
	tn := &TestNetwork{Bootstrap: append([]string(nil), o.Bootstrap...)}
	if n <= 0 {
		return tn, nil
	}
	start := func(port uint16, boot bool) (*Node, error) {
		conn, err := o.Listen(netip.AddrPortFrom(host, port))
		if err != nil {
			return nil, err
		}
		tn.mu.Lock()
		tn.conns = append(tn.conns, conn)
		tn.mu.Unlock()
		var cfg Config
		if o.Config != nil {
			cfg = *o.Config
		}
		cfg.Conn, cfg.ClientConn = conn, nil
		cfg.Mode = rpc.Persistent
		cfg.NotFirewalled = true
		if cfg.Logger == nil {
			cfg.Logger = o.Logger
		}
		if boot {
			addr, err := netip.ParseAddrPort(conn.LocalAddr().String())
			if err != nil {
				return nil, err
			}
			cfg.Bootstrapper = addr
			cfg.Bootstrap = []string{}
		} else {
			cfg.Bootstrap = tn.Bootstrap
		}
		nd, err := New(cfg)
		if err != nil {
			return nil, err
		}
		tn.mu.Lock()
		tn.Nodes = append(tn.Nodes, nd)
		tn.mu.Unlock()
		return nd, nd.WaitReady(ctx)
	}
	fail := func(err error) (*TestNetwork, error) {
		tn.Close()
		return nil, err
	}
	rest := n
	if len(tn.Bootstrap) == 0 {
		first, err := start(uint16(o.Port), true)
		if err != nil {
			return fail(err)
		}
		tn.Bootstrap = []string{first.LocalAddr().String()}
		rest--
	}
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs []error
	for range rest {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := start(0, false); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		}()
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	return tn, nil
}

// Close stops every node (last started first) and closes their sockets.
func (t *TestNetwork) Close() error {
	t.once.Do(func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		var wg sync.WaitGroup
		for _, n := range t.Nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.Close() }()
		}
		wg.Wait()
		for _, c := range t.conns {
			if cl, ok := c.(interface{ Close() error }); ok {
				cl.Close()
			}
		}
	})
	return nil
}
