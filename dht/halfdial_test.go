package dht

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestHalfDialNotAccepted: a handshake answered on a path where the
// server connects first (here: sent to the server directly, so it
// answers there and connects at once) is handed to Accept only once the
// client's side opens. Another process's Probe of the key (a half-dial:
// it reads the answer and never connects) used to come out of Accept as a
// silent connection, which an Exposer took for a raw client and connected
// to its target. A real client on the same path is accepted as before.
func TestHalfDialNotAccepted(t *testing.T) {
	tn := testnet(t, 3)
	ctx := testCtx(t, 60*time.Second)
	srv := peerNode(t, tn, seedKey(1))
	l, err := srv.Listen(ctx, seedKey(3), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	direct := []netip.AddrPort{srv.LocalAddr()}

	sibling := peerNode(t, tn, seedKey(4))
	h, err := sibling.Probe(ctx, seedKey(3), direct)
	if err != nil || h != HolderOther {
		t.Fatalf("probe: %v, %v; want HolderOther", h, err)
	}
	select {
	case c := <-accepted:
		c.Close()
		t.Fatal("Accept returned the probe's half-dial as a connection")
	case <-time.After(2 * time.Second):
	}

	cli := peerNode(t, tn, seedKey(2))
	routeVia(cli, seedKey(3).Public, srv.LocalAddr())
	c, err := cli.Dial(ctx, seedKey(3).Public, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case sc := <-accepted:
		defer sc.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		sc.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 1)
		if _, err := sc.Read(b); err != nil || b[0] != 'x' {
			t.Fatalf("server read %q, %v", b, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client dialing on the same path was not accepted")
	}
}
