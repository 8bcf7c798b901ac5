package keytunnel

import (
	"context"
	"fmt"

	"github.com/keytunnel/keytunnel/dht"
)

// TestNetwork is an in-process DHT on loopback, for tests: nodes whose
// Config.Bootstrap is its Bootstrap find each other through it and
// nothing else.
type TestNetwork struct {
	// Bootstrap is the value for Config.Bootstrap (and for the command's
	// --bootstrap).
	Bootstrap []string
	tn        *dht.TestNetwork
}

// Testnet starts n DHT nodes (0 means 3) on 127.0.0.1, as `keytunnel
// testnet` and hyperdht's testnet do. ctx bounds the start; Close stops it.
func Testnet(ctx context.Context, n int) (*TestNetwork, error) {
	if n == 0 {
		n = 3
	}
	tn, err := dht.Testnet(ctx, n, nil)
	if err != nil {
		return nil, fmt.Errorf("keytunnel: starting a testnet: %w", err)
	}
	return &TestNetwork{Bootstrap: tn.Bootstrap, tn: tn}, nil
}

// Config is a Config for a node on this network, bound to loopback.
func (t *TestNetwork) Config() Config {
	return Config{Bootstrap: t.Bootstrap, Host: "127.0.0.1"}
}

// Close stops the network's nodes.
func (t *TestNetwork) Close() error { return t.tn.Close() }
