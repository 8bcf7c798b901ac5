package app

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
)

// TestnetOptions are testnet's arguments.
type TestnetOptions struct {
	Nodes int    // how many nodes; 0 means 3
	Port  int    // the bootstrap node's UDP port; 0 picks one
	Host  string // the address the nodes bind; empty means 127.0.0.1
}

// Testnet runs a local DHT (a bootstrap node and Nodes-1 more, as
// hyperdht's testnet) until ctx ends. The first stdout line is the value
// for --bootstrap / KEYTUNNEL_BOOTSTRAP.
func Testnet(ctx context.Context, env *Env, o TestnetOptions) error {
	env.init()
	defer env.ignoreHangup("testnet")()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Nodes < 1 || o.Nodes > 1000 {
		return fmt.Errorf("--nodes %d: want 1 to 1000", o.Nodes)
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("--port %d is not a UDP port", o.Port)
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if a, err := netip.ParseAddr(o.Host); err != nil || !a.Is4() {
		return fmt.Errorf("--host %q: want an IPv4 address (dht-rpc speaks IPv4 only)", o.Host)
	}
	stop, err := env.observe("testnet")
	if err != nil {
		return err
	}
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, env.joinTimeout()+time.Duration(o.Nodes)*time.Second)
	defer cancel()
	tn, err := dht.Testnet(sctx, o.Nodes, &dht.TestnetOptions{
		Host: o.Host, Port: o.Port, Logger: env.logger.With("component", "dht"),
	})
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("UDP port %d is already in use", o.Port)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("starting the testnet: %w", err)
	}
	defer tn.Close()
	bs := strings.Join(tn.Bootstrap, ",")
	env.reg.setDHT(tn.Nodes[0].Stats) // the bootstrap node: every node joins through it
	env.reg.setServer(&regServer{role: "testnet", listen: bs, since: time.Now(),
		counters: func() []serverCounter { return testnetCounters(len(tn.Nodes)) }})
	env.out.emit(bs, Event{Event: EvTestnet, Bootstrap: bs, Nodes: len(tn.Nodes)})
	env.logger.Info("testnet up; join it with --bootstrap "+bs+" or KEYTUNNEL_BOOTSTRAP="+bs, "nodes", len(tn.Nodes))
	<-ctx.Done()
	return nil
}

// NodeOptions are node's arguments.
type NodeOptions struct {
	Port int // UDP port; 0 picks one
}

// Node runs a persistent DHT node until ctx ends: it serves lookups and
// announces for the network and can be a bootstrap node for others. The
// first stdout line is its address (the sampled public one once known).
func Node(ctx context.Context, env *Env, o NodeOptions) error {
	env.init()
	defer env.ignoreHangup("node")()
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("--port %d is not a UDP port", o.Port)
	}
	stop, err := env.observe("node")
	if err != nil {
		return err
	}
	defer stop()
	n, err := startNode(ctx, env, o.Port, rpc.Persistent)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer n.Close()
	env.reg.setNetwork(n.Network())
	st := n.State()
	addr := n.LocalAddr().String()
	if st.Host.IsValid() && st.Port != 0 {
		addr = netip.AddrPortFrom(st.Host, st.Port).String()
	}
	env.out.emit(addr, Event{Event: EvNode, Address: addr, Bootstrap: addr, Nodes: st.Nodes})
	env.logger.Info("node up", "bound", n.LocalAddr().String(), "address", addr, "nodes", st.Nodes, "firewalled", st.Firewalled)
	<-ctx.Done()
	return nil
}

// KeygenOptions are keygen's arguments.
type KeygenOptions struct {
	Out string // seed file to write; empty prints the seed
}

// Keygen makes a key pair: it saves the seed to o.Out (mode 0600, never
// overwriting) and prints the public key, or prints both.
func Keygen(env *Env, o KeygenOptions) error {
	env.init()
	kp, err := key.Generate(nil)
	if err != nil {
		return err
	}
	if o.Out == "" {
		seed := kp.Seed()
		env.out.emit(fmt.Sprintf("%s\nseed %x", kp.Public, seed[:]), Event{Event: EvKey, PublicKey: kp.Public.String(), PublicKeyZ32: kp.Public.Z32(), Seed: fmt.Sprintf("%x", seed[:])})
		return nil
	}
	if err := key.WriteSeedFile(o.Out, kp.Seed()); err != nil {
		if errors.Is(err, key.ErrExists) {
			return fmt.Errorf("%s exists; not overwriting a key", o.Out)
		}
		return err
	}
	abs, _ := filepath.Abs(o.Out)
	env.out.emit(kp.Public.String(), Event{Event: EvKey, PublicKey: kp.Public.String(), PublicKeyZ32: kp.Public.Z32(), KeyFile: abs})
	env.logger.Info("seed saved", "file", abs, "public_key", kp.Public.String(), "z32", kp.Public.Z32())
	return nil
}
