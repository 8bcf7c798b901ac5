package dht

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
)

// denyingListener listens on seedKey(seed+1) on a node of a small test
// network, with a firewall that refuses everyone.
func denyingListener(t *testing.T, seed byte) *Listener {
	t.Helper()
	tn := testnet(t, 3)
	ctx := testCtx(t, 30*time.Second)
	l, err := peerNode(t, tn, seedKey(seed)).Listen(ctx, seedKey(seed+1), &ListenOptions{Firewall: func(key.PublicKey, netip.AddrPort) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// A handshake the firewall refuses frees its slot at once (issue #13: it
// held one of the 4096 for 10 s), and a repeat of the same msg1 gets the
// same refusal without a slot or new work.
func TestRefusedHandshakeFreesSlot(t *testing.T) {
	l := denyingListener(t, 0xe1)
	from := &rpc.Request{From: netip.MustParseAddrPort("198.51.100.1:10")}
	hs, msg1 := clientHello(t, seedKey(0xe3), l.kp.Public)
	first, ok := l.onHandshake(msg1, netip.MustParseAddrPort("198.51.100.1:4000"), from)
	if !ok {
		t.Fatal("no answer to a refused handshake")
	}
	pt, err := hs.ReadMessage(nil, first)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := wire.DecodeNoisePayload(pt); err != nil || p.Error != wire.ErrorAborted {
		t.Fatalf("refusal payload %+v %v", p, err)
	}
	if n, c := slotCount(l), connectsCount(l); n != 0 || c != 0 {
		t.Fatalf("after a refusal: %d slots, %d handshakes held; want none", n, c)
	}
	again, ok := l.onHandshake(msg1, netip.MustParseAddrPort("198.51.100.1:4000"), from)
	if !ok || !bytes.Equal(again, first) {
		t.Fatal("a repeated refused msg1 got another answer")
	}
}

// Fresh handshakes are limited per client source, whatever its ports
// (issue #13: the limit was per IP:port): past the burst, a flood from
// one address gets silence before any key work, while another source's
// handshake still gets its answer.
func TestHandshakeRateLimitPerSource(t *testing.T) {
	l := denyingListener(t, 0xe4)
	// A bucket that does not refill within the test (the race detector
	// makes each handshake slow enough to refill the real one).
	const burst = 10
	l.mu.Lock()
	l.limiter = rpc.NewRateLimiter(1e-6, burst, maxHandshakeSlots)
	l.mu.Unlock()
	relay := &rpc.Request{From: netip.MustParseAddrPort("198.51.100.9:49737")}
	answered := 0
	for i := range 3 * burst {
		_, msg1 := clientHello(t, seedKey(byte(i)), l.kp.Public)
		peer := netip.MustParseAddrPort(fmt.Sprintf("203.0.113.5:%d", 1024+i))
		if _, ok := l.onHandshake(msg1, peer, relay); ok {
			answered++
		}
	}
	if answered != burst {
		t.Fatalf("%d of %d handshakes from one address (rotating ports) answered, want the burst (%d)", answered, 3*burst, burst)
	}
	_, msg1 := clientHello(t, seedKey(0xee), l.kp.Public)
	if _, ok := l.onHandshake(msg1, netip.MustParseAddrPort("203.0.113.6:1024"), relay); !ok {
		t.Fatal("another source's handshake was limited with the flood")
	}
}
