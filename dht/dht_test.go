package dht

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

func testLogger() *slog.Logger {
	if os.Getenv("DHT_DEBUG") == "conn" {
		h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
		return slog.New(prefixFilter{h, "dht: "})
	}
	if os.Getenv("DHT_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func testnet(t testing.TB, n int) *TestNetwork {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tn, err := Testnet(ctx, n, &TestnetOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	return tn
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func seedKey(b byte) key.KeyPair {
	var s key.Seed
	for i := range s {
		s[i] = b
	}
	return key.FromSeed(s)
}

func lookupHas(t testing.TB, ctx context.Context, n *Node, topic [32]byte, pk [32]byte) bool {
	t.Helper()
	s := n.Lookup(ctx, topic)
	found := false
	for r := range s.All(ctx) {
		for _, p := range r.Peers {
			if p.PublicKey == pk {
				found = true
			}
		}
	}
	return found
}

func TestGoTestnet(t *testing.T) {
	tn := testnet(t, 10)
	ctx := testCtx(t, 30*time.Second)
	a, b := tn.Nodes[3], tn.Nodes[8]
	for _, n := range tn.Nodes {
		if s := n.State(); s.Ephemeral || s.Firewalled {
			t.Fatalf("node %v: %+v", n.LocalAddr(), s)
		}
	}
	kp := seedKey(7)
	topic := Hash([]byte("topic"))
	if err := a.Announce(ctx, topic, kp, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !lookupHas(t, ctx, b, topic, kp.Public) {
		t.Fatal("lookup did not find the announce")
	}
	if err := a.Unannounce(ctx, topic, kp); err != nil {
		t.Fatal(err)
	}
	if lookupHas(t, ctx, b, topic, kp.Public) {
		t.Fatal("lookup still finds the unannounced key")
	}

	// self-announce: FIND_PEER
	self := Hash(kp.Public[:])
	if err := a.Announce(ctx, self, kp, nil, nil); err != nil {
		t.Fatal(err)
	}
	fp := b.FindPeer(ctx, kp.Public)
	got := 0
	for r := range fp.All(ctx) {
		if r.Peer.PublicKey == kp.Public {
			got++
		}
	}
	if got == 0 {
		t.Fatal("findPeer found nothing")
	}

	if err := a.MutablePut(ctx, kp, []byte("v1"), 1); err != nil {
		t.Fatal(err)
	}
	if err := a.MutablePut(ctx, kp, []byte("v2"), 2); err != nil {
		t.Fatal(err)
	}
	res, err := b.MutableGet(ctx, kp.Public, 0, true)
	if err != nil || res.Seq != 2 || string(res.Value) != "v2" {
		t.Fatalf("mutableGet = %+v, %v", res, err)
	}
	if err := a.MutablePut(ctx, kp, []byte("v1"), 1); !errors.Is(err, ErrSeqTooLow) {
		t.Fatalf("lower seq: %v", err)
	}
	if err := a.MutablePut(ctx, kp, []byte("other"), 2); !errors.Is(err, ErrSeqReused) {
		t.Fatalf("reused seq: %v", err)
	}
	if _, err := b.MutableGet(ctx, kp.Public, 3, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("seq 3: %v", err)
	}

	h, err := a.ImmutablePut(ctx, []byte("immutable"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := b.ImmutableGet(ctx, h)
	if err != nil || string(v) != "immutable" {
		t.Fatalf("immutableGet = %q, %v", v, err)
	}
	if _, err := b.ImmutableGet(ctx, Hash([]byte("nothing"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing immutable: %v", err)
	}
}

func keyFor(i int) key.KeyPair {
	var s key.Seed
	copy(s[:], fmt.Appendf(nil, "scale key %d", i))
	return key.FromSeed(s)
}

// TestCloseReleasesGoroutines: a testnet with calls in flight stops every
// goroutine it started when closed.
func TestCloseReleasesGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tn, err := Testnet(ctx, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tn.Nodes[2].ImmutableGet(ctx, Hash([]byte("missing")))
		done <- err
	}()
	tn.Close()
	tn.Close()
	<-done
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// prefixFilter keeps the records whose message starts with prefix.
type prefixFilter struct {
	slog.Handler
	prefix string
}

func (f prefixFilter) Handle(ctx context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, f.prefix) {
		return nil
	}
	return f.Handler.Handle(ctx, r)
}
