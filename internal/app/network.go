package app

import (
	"context"
	"net/netip"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/tunnel"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/stack"
)

// Network is what the tunnel commands need from the DHT: dial a key, listen
// on a key pair (see stack.Network). The relay lists of Dialer and Listen
// are an entry's own blind relays (config.Relay); nil means
// Env.RelayThrough.
type Network = stack.Network

// listenOptions are the Listen options of the expose entry named entry
// ("" outside up) serving service: its refusals are logged and emitted
// as refused events naming the entry, and a takeover of its key by
// another process (which replace allows this one to do) is logged.
func (e *Env) listenOptions(entry string, service key.PublicKey, allow []key.PublicKey, relay []key.PublicKey, replace bool) stack.ListenOptions {
	log := e.logger
	if entry != "" {
		log = log.With("entry", entry)
	}
	return stack.ListenOptions{
		Allow: tunnel.NewAllowList(allow...),
		Relay: relay,
		Refused: func(client key.PublicKey, addr netip.AddrPort) {
			e.refusedClient(log, entry, service, client, addr)
		},
		Replace: replace,
		TookOver: func() {
			log.Info("took over "+service.String()+" from another running process: new clients reach this one; that one keeps its open connections", "public_key", service.String())
		},
		OnReplaced: func(replaced bool) {
			if replaced {
				log.Warn("another process took over "+service.String()+" (started with --replace): new clients reach it; this one keeps its open connections and serves the key again once that process stops", "public_key", service.String())
				return
			}
			log.Info("serving "+service.String()+" again: the process that took it over has stopped", "public_key", service.String())
		},
	}
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
	return appNetwork{n.Network()}, nil
}

// startNode binds port, starts a node in mode and waits until it has
// joined the network (bounded by env.JoinTimeout).
func startNode(ctx context.Context, env *Env, port int, mode rpc.Mode) (*stack.Node, error) {
	env.init()
	return stack.Start(ctx, stack.Options{
		Bootstrap:    env.Bootstrap,
		Host:         env.Host,
		Port:         port,
		Mode:         mode,
		RelayThrough: env.RelayThrough,
		Logger:       env.logger,
		JoinTimeout:  env.joinTimeout(),
	})
}

// appNetwork gives a dial refused by an --allow list the key to name: a
// client without --key dials with a random key of its own, rather than the
// node's identity, so that the refusal can say which key it was.
type appNetwork struct{ stack.Network }

func (n appNetwork) Dialer(kp key.KeyPair, relay []key.PublicKey) tunnel.Dialer {
	random := kp.Public.IsZero()
	if random {
		kp, _ = key.Generate(nil)
	}
	return refusalDialer{d: n.Network.Dialer(kp, relay), kp: kp, random: random}
}

type refusalDialer struct {
	d      tunnel.Dialer
	kp     key.KeyPair
	random bool // kp is a random key for this run
}

func (d refusalDialer) Dial(ctx context.Context, remote key.PublicKey) (tunnel.PeerConn, error) {
	c, err := d.d.Dial(ctx, remote)
	if err != nil {
		return nil, dialed(err, d.kp, d.random)
	}
	return c, nil
}
