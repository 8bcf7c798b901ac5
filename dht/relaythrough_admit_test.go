package dht

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/relay/blindrelay"
)

// ServeBlindRelay hands the blind-relay server each connection's remote
// address: with MaxSessionsPerSource 1, a second connection from the same
// loopback address is refused and closed, and the first, which never asks
// for a pairing, is closed FirstMessageTimeout after it opened.
func TestServeBlindRelayAdmission(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 60*time.Second)
	rn := peerNode(t, tn, seedKey(1))
	const silentAfter = time.Second
	relay, err := rn.ServeBlindRelay(ctx, seedKey(3), &blindrelay.ServerOptions{MaxSessionsPerSource: 1, FirstMessageTimeout: silentAfter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	cli := peerNode(t, tn, seedKey(2))

	// closedWithin reads c until the relay closes it, failing after d.
	closedWithin := func(what string, c *Conn, d time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		c.SetReadDeadline(start.Add(d))
		_, err := io.Copy(io.Discard, c)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: still open after %v", what, d)
		}
		return time.Since(start)
	}

	start := time.Now()
	c1, err := cli.Dial(ctx, seedKey(3).Public, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	waitStats := func(what string, ok func(blindrelay.Stats) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(relay.Stats()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v", what, relay.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitStats("the first session", func(s blindrelay.Stats) bool { return s.Sessions == 1 })

	c2, err := cli.Dial(ctx, seedKey(3).Public, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	closedWithin("the connection over the per-source cap", c2, 10*time.Second)
	if s := relay.Stats(); s.SessionsRefused != 1 || s.Sessions != 1 {
		t.Fatalf("after the refusal: %+v", s)
	}

	closedWithin("the silent connection", c1, 10*time.Second)
	if d := time.Since(start); d < silentAfter {
		t.Fatalf("the silent connection closed %v after it was dialed, before FirstMessageTimeout %v", d, silentAfter)
	}
	waitStats("the silent session to go", func(s blindrelay.Stats) bool { return s.Sessions == 0 && s.Silent == 1 })
}
