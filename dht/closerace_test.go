package dht

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// TestCloseDuringHandshake: Close while a handshake is between its slot
// and its stream (here: held in the firewall) neither races with the
// handshake (stop 19's CI failure: the race detector saw abortSlot read
// the slot's stream as the handshake wrote it) nor leaves that stream
// behind: the handshake gives up once it sees the slot aborted.
func TestCloseDuringHandshake(t *testing.T) {
	tn := testnet(t, 3)
	ctx := testCtx(t, 30*time.Second)
	srv := peerNode(t, tn, seedKey(1))
	cli := peerNode(t, tn, seedKey(2))
	entered, release := make(chan struct{}, 1), make(chan struct{})
	l, err := srv.Listen(ctx, seedKey(3), &ListenOptions{Firewall: func(key.PublicKey, netip.AddrPort) bool {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return false
	}})
	if err != nil {
		t.Fatal(err)
	}
	dialed := make(chan error, 1)
	go func() {
		c, err := cli.Dial(ctx, seedKey(3).Public, nil)
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("no handshake reached the firewall")
	}
	streams := srv.sock.UDX().Streams()
	closed := make(chan struct{})
	go func() {
		l.Close()
		close(closed)
	}()
	// Let Close abort the slot before the handshake goes on.
	time.Sleep(200 * time.Millisecond)
	close(release)
	<-closed
	if err := <-dialed; err == nil {
		t.Fatal("dial to a listener closed during its handshake succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.sock.UDX().Streams() > streams {
		if time.Now().After(deadline) {
			t.Fatalf("%d udx streams on the server after Close, %d before the handshake made one", srv.sock.UDX().Streams(), streams)
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}
