package dht

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A listener counts its handshakes by outcome, a client its dials and
// failures, and PathOf names a direct connection's address.
func TestStatsHandshakesAndPath(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	srv, cli, l := firewalledPair(t, ctx)
	echo(t, l)
	if _, err := cli.Dial(ctx, seedKey(3).Public, nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("denied dial: %v", err)
	}
	c, err := cli.Dial(ctx, seedKey(3).Public, &DialOptions{KeyPair: seedKey(7)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, 1000)

	p := cli.PathOf(c)
	if !p.Relay.IsZero() || p.Addr.String() != c.RemoteAddr().String() || p.String() != "direct "+c.RemoteAddr().String() {
		t.Fatalf("path %+v (%v), connected to %v", p, p, c.RemoteAddr())
	}
	ss, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ss.Handshakes[HandshakeAccepted] != 1 || ss.Handshakes[HandshakeFirewall] != 1 || len(ss.Handshakes) != len(HandshakeOutcomes()) {
		t.Fatalf("server handshakes %v", ss.Handshakes)
	}
	cs, err := cli.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Dials != 2 || cs.DialFailures != 1 || cs.RelayFallbacks != 0 || cs.RoutingNodes == 0 || cs.RPC.Requests == 0 || cs.RPC.Responses == 0 {
		t.Fatalf("client stats %+v", cs)
	}
	t.Logf("server %+v\nclient %+v", ss, cs)
}

// Stats waits for the node's loop no longer than its context.
func TestStatsAfterClose(t *testing.T) {
	tn := testnet(t, 3)
	n := peerNode(t, tn, seedKey(1))
	n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := n.Stats(ctx); err == nil {
		t.Fatal("Stats of a closed node succeeded")
	}
}
