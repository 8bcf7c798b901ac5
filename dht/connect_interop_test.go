package dht

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

const interopBytes = 64 << 20

// TestConnectInteropGoClient: a Go client dials a Node hyperdht server on
// a Go testnet and 64 MiB come back intact.
func TestConnectInteropGoClient(t *testing.T) {
	nodetest.Require(t)
	tn := testnet(t, 5)
	ctx := testCtx(t, 120*time.Second)
	srvKey := seedKey(21)
	p := nodetest.Start(t, "hyperdht-peer.js", "server", strings.Join(tn.Bootstrap, ","), fmt.Sprintf("%x", srvKey.Seed()))
	if got := p.Expect("listening ", 60*time.Second); got != srvKey.Public.String() {
		t.Fatalf("node listens on %s", got)
	}
	cli := peerNode(t, tn, seedKey(22))
	for i := range 2 {
		start := time.Now()
		c, err := cli.Dial(ctx, srvKey.Public, nil)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Logf("dial %d to Node: %v via %v", i, time.Since(start), c.RemoteAddr())
		size := 1 << 20
		if i == 0 {
			size = interopBytes
		}
		start = time.Now()
		roundTrip(t, c, size)
		t.Logf("echoed %d bytes in %v", size, time.Since(start))
		c.Close()
		if l := p.Expect("connection ", 10*time.Second); !strings.HasPrefix(l, seedKey(22).Public.String()) {
			t.Fatalf("Node saw %q", l)
		}
	}
}

// TestConnectInteropNodeClient: a Node hyperdht client connects to a Go
// server on a Go testnet and 64 MiB come back intact.
func TestConnectInteropNodeClient(t *testing.T) {
	nodetest.Require(t)
	tn := testnet(t, 5)
	ctx := testCtx(t, 120*time.Second)
	srv := peerNode(t, tn, seedKey(23))
	l, err := srv.Listen(ctx, seedKey(24), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	echo(t, l)
	p := nodetest.Start(t, "hyperdht-peer.js", "client", strings.Join(tn.Bootstrap, ","), seedKey(24).Public.String(), fmt.Sprint(interopBytes), "2")
	for i := range 2 {
		line := p.Expect("", 90*time.Second)
		f := strings.Fields(line)
		if len(f) != 5 || f[0] != "result" {
			t.Fatalf("Node client %d: %q (stderr %s)", i, line, p.Stderr())
		}
		if f[2] != f[3] {
			t.Fatalf("Node client %d: sent %s, got back %s", i, f[2], f[3])
		}
		t.Logf("Node client %d: open in %s ms, path %s, sha256 %s", i, f[1], f[4], f[2][:16])
	}
}
