package dht

import (
	"testing"
	"time"
)

// TestProbe: a probe finds a live listener (another node's: HolderOther;
// its own: HolderSelf), no holder for a key nobody announced, and none
// for a record whose process died without unannouncing, within
// ProbeTimeout.
func TestProbe(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 90*time.Second)
	srv := peerNode(t, tn, seedKey(1))
	other := peerNode(t, tn, seedKey(2))
	kp := seedKey(3)
	l, err := srv.Listen(ctx, kp, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	if h, err := other.Probe(ctx, kp, nil); h != HolderOther || err != nil {
		t.Fatalf("probe of a live listener from another node: %v, %v", h, err)
	}
	t.Logf("live holder found in %v", time.Since(start))
	if h := l.probe(); h != HolderSelf {
		t.Fatalf("the listener's own probe at its relays: %v", h)
	}
	start = time.Now()
	if h, err := other.Probe(ctx, seedKey(4), nil); h != HolderNone || err != nil {
		t.Fatalf("probe of an unannounced key: %v, %v", h, err)
	}
	t.Logf("no record: %v", time.Since(start))

	// A process that dies leaves its record behind.
	gone := peerNode(t, tn, seedKey(5))
	if _, err := gone.Listen(ctx, seedKey(6), nil); err != nil {
		t.Fatal(err)
	}
	gone.Close() // no unannounce
	start = time.Now()
	if h, err := other.Probe(ctx, seedKey(6), nil); h != HolderNone || err != nil {
		t.Fatalf("probe of a dead listener's record: %v, %v", h, err)
	}
	if d := time.Since(start); d > ProbeTimeout+time.Second {
		t.Fatalf("stale record took %v to judge", d)
	} else {
		t.Logf("stale record judged in %v", d)
	}
}

// TestListenerReplacedAndBack: a second process (node) that probes and
// then announces the same key takes it over: the first hears
// OnReplaced(true) and does not take the key back. When the second
// closes (unannouncing), the first re-announces at once, hears
// OnReplaced(false), and clients reach it again.
func TestListenerReplacedAndBack(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 120*time.Second)
	first := peerNode(t, tn, seedKey(1))
	second := peerNode(t, tn, seedKey(2))
	cli := peerNode(t, tn, seedKey(7))
	kp := seedKey(3)
	events := make(chan bool, 4)
	l1, err := first.Listen(ctx, kp, &ListenOptions{OnReplaced: func(v bool) { events <- v }})
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	if h, err := second.Probe(ctx, kp, nil); h != HolderOther || err != nil {
		t.Fatalf("second's probe: %v, %v", h, err)
	}
	l2, err := second.Listen(ctx, kp, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case v := <-events:
		if !v {
			t.Fatal("OnReplaced(false) before being replaced")
		}
		t.Logf("first noticed the takeover after %v", time.Since(start))
	case <-time.After(30 * time.Second):
		t.Fatal("the first listener did not notice the takeover within 30 s")
	}
	c, err := cli.Dial(ctx, kp.Public, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := acceptWithin(t, l2, 5*time.Second); !got {
		t.Fatal("a client did not reach the process that took over")
	}

	l2.Close() // unannounces: the first's record is gone too
	start = time.Now()
	select {
	case v := <-events:
		if v {
			t.Fatal("OnReplaced(true) again")
		}
		t.Logf("first announced again after %v", time.Since(start))
	case <-time.After(20 * time.Second):
		t.Fatal("the first listener did not announce again within 20 s of the second's unannounce")
	}
	dctx := testCtx(t, 20*time.Second)
	c, err = cli.Dial(dctx, kp.Public, nil)
	if err != nil {
		t.Fatalf("dial after the second left: %v", err)
	}
	c.Close()
	if !acceptWithin(t, l1, 5*time.Second) {
		t.Fatal("the first listener got no connection after taking the key back")
	}
}

func acceptWithin(t *testing.T, l *Listener, d time.Duration) bool {
	t.Helper()
	ctx := testCtx(t, d)
	c, err := l.AcceptConn(ctx)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
