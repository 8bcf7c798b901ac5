package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
)

// TestRelayCommand: `keytunnel relay` prints its key and serves; expose
// and connect configured with --relay-through it still reach each other
// (on loopback the direct path wins; the NAT lab tests in dht/ show the
// relay carrying random×random connections).
func TestRelayCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tn, err := dht.Testnet(ctx, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()

	renv, rout, _ := testEnv(t, nil)
	renv.Bootstrap = tn.Bootstrap
	stopRelay, _ := run(t, func(ctx context.Context) error { return Relay(ctx, renv, RelayOptions{}) })
	relayKey := strings.TrimSpace(rout.waitLines(t, 1, 30*time.Second)[0])
	rk, err := ParseRelayKeys([]string{relayKey})
	if err != nil || len(rk) != 1 {
		t.Fatalf("relay printed %q: %v", relayKey, err)
	}
	if _, err := ParseRelayKeys([]string{"nope"}); err == nil || !strings.Contains(err.Error(), "--relay-through") {
		t.Fatalf("bad relay key: %v", err)
	}

	// An echo service.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	skp, _ := key.Generate(nil)
	eenv, eout, _ := testEnv(t, nil)
	eenv.Bootstrap, eenv.RelayThrough = tn.Bootstrap, rk
	stopExpose, _ := run(t, func(ctx context.Context) error {
		return Expose(ctx, eenv, ExposeOptions{Target: ln.Addr().String(), Key: KeyOptions{Seed: fmt.Sprintf("%x", skp.Seed())}})
	})
	if got := eout.waitLines(t, 1, 30*time.Second)[0]; got != skp.Public.String() {
		t.Fatalf("expose printed %q", got)
	}

	cenv, cout, _ := testEnv(t, nil)
	cenv.Bootstrap, cenv.RelayThrough = tn.Bootstrap, rk
	pr, pw := io.Pipe()
	cenv.Stdin = pr
	stopConnect, _ := run(t, func(ctx context.Context) error {
		return Connect(ctx, cenv, ConnectOptions{Remote: skp.Public.String()})
	})
	io.WriteString(pw, "through a tunnel with a relay configured\n")
	cout.waitLine(t, "through a tunnel with a relay configured", 30*time.Second)
	pw.Close()
	stopConnect()
	stopExpose()
	if err := stopRelay(); err != nil {
		t.Fatal(err)
	}
}
