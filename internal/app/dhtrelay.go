package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
	"github.com/keytunnel/keytunnel/relay/dhtrelay"
)

// EvDHTRelay: dht-relay is serving (address: its URL).
const EvDHTRelay = "dht-relay"

// DHTRelayOptions are dht-relay's arguments.
type DHTRelayOptions struct {
	Port        int    // TCP port; 0 means 49443 (the reference's default)
	Host        string // address to bind; empty means all interfaces
	WS          bool   // WebSocket transport (the reference's bin.js) instead of TCP
	BehindProxy bool   // take client addresses from X-Forwarded-For (logs)
	// Listener, if set, is used instead of binding Host:Port (tests).
	Listener net.Listener
}

// DHTRelay runs a DHT node and relays it to @hyperswarm/dht-relay clients
// (Node's `new Node(stream)`, keytunnel --relay) over TCP or WebSocket
// until ctx ends. The first stdout line is the relay's URL.
func DHTRelay(ctx context.Context, env *Env, o DHTRelayOptions) error {
	env.init()
	defer env.ignoreHangup("dht-relay")()
	if o.Port == 0 {
		o.Port = 49443
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("--port %d is not a TCP port", o.Port)
	}
	l := o.Listener
	if l == nil {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("TCP port %d is already in use", o.Port)
		}
		if err != nil {
			return fmt.Errorf("dht-relay: %w", err)
		}
	}
	defer l.Close()
	stop, err := env.observe("dht-relay")
	if err != nil {
		return err
	}
	defer stop()
	n, err := startNode(ctx, env, 0, rpc.Adaptive)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer n.Close()
	env.reg.setNetwork(n.Network())
	srv := dhtrelay.NewServer(n.Node, dhtrelay.ServerOptions{
		BehindProxy: o.BehindProxy,
		Logger:      env.logger.With("component", "dht-relay"),
	})
	defer srv.Close()
	scheme := "tcp"
	errc := make(chan error, 1)
	if o.WS {
		scheme = "ws"
		go func() { errc <- srv.ServeWebSocket(l) }()
	} else {
		go func() { errc <- srv.Serve(l) }()
	}
	u := scheme + "://" + l.Addr().String()
	env.reg.setServer(&regServer{role: "dht-relay", listen: u, since: time.Now(),
		counters: func() []serverCounter { return dhtRelayCounters(srv.Clients()) }})
	env.out.emit(u, Event{Event: EvDHTRelay, Address: u})
	env.logger.Info("dht-relay up; clients use --relay "+u, "dht", n.LocalAddr().String())
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("dht-relay: %w", err)
	}
}

// DHTRelayClientOptions adjust RelayNetwork.
type DHTRelayClientOptions struct {
	// NonCustodial keeps the secret keys here: this process runs the
	// Noise handshakes and signs the announces, and the relay carries only
	// ciphertext. A keytunnel dht-relay supports it both ways; the Node
	// relay only for dialing (forward, connect), as its non-custodial
	// announce is broken. Custodial (the default) hands the relay the keys.
	NonCustodial bool
}

// RelayNetwork returns an Env.OpenNetwork that reaches the DHT through the
// dht-relay at rawURL (tcp://host:port, ws://host:port or wss://…)
// instead of UDP: no UDP socket is opened. Unless o.NonCustodial, the
// relay holds the keys of what runs through it, so use a relay you trust.
func RelayNetwork(rawURL string, o DHTRelayClientOptions) (func(ctx context.Context, env *Env) (Network, error), error) {
	if err := stack.CheckRelayURL(rawURL); err != nil {
		return nil, err
	}
	return func(ctx context.Context, env *Env) (Network, error) {
		env.init()
		nw, err := stack.DialRelay(ctx, rawURL, o.NonCustodial, key.KeyPair{}, env.logger, env.joinTimeout())
		if err != nil {
			return nil, err
		}
		return appNetwork{nw}, nil
	}, nil
}
