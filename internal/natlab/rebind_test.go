package natlab

import (
	"net"
	"testing"
	"time"
)

// FlushConntrack makes a randomizing NAT map a socket's next packet to a
// new port and drops what the server sends to the old one; ChangeAddr
// moves a host behind a NAT to a new LAN address, and its socket's next
// packet gets a new mapping too.
func TestFlushConntrackAndChangeAddr(t *testing.T) {
	lab := New(t)
	pub := lab.Host(lab.Public())
	srv := echoServer(t, pub, 7000)
	nat := lab.NAT(Random)
	h := lab.Host(nat)
	c := h.ListenUDP(0)
	m1 := ask(t, c, srv)
	if !m1.IsValid() {
		t.Fatal("no echo through the NAT")
	}
	if n := nat.ConntrackCount(); n < 1 {
		t.Fatalf("the NAT tracks %d connections after a round trip", n)
	}
	nat.FlushConntrack()
	if n := nat.ConntrackCount(); n != 0 {
		t.Fatalf("the NAT tracks %d connections after a flush", n)
	}
	// The server's packet to the old mapping is unsolicited now.
	sc := pub.ListenUDP(0)
	send(t, sc, m1, "to the old mapping")
	expectNothing(t, c, 300*time.Millisecond, "after the flush")
	m2 := ask(t, c, srv)
	if !m2.IsValid() || m2 == m1 {
		t.Fatalf("after the flush the server saw %v, before %v: want a new mapping", m2, m1)
	}
	old := h.Addr()
	now := h.ChangeAddr()
	if now == old || h.Addr() != now || !now.Is4() || now.As4()[0] != 10 {
		t.Fatalf("ChangeAddr: %v -> %v (Addr %v)", old, now, h.Addr())
	}
	m3 := ask(t, c, srv)
	if !m3.IsValid() || m3 == m2 {
		t.Fatalf("after the address change the server saw %v, before %v: want a new mapping", m3, m2)
	}
	// The socket's local address is 0.0.0.0; a new one binds fine too.
	c2 := h.ListenUDP(0)
	if m := ask(t, c2, srv); !m.IsValid() {
		t.Fatal("a new socket gets no echo after the address change")
	}
	if la := c.LocalAddr().(*net.UDPAddr); !la.IP.IsUnspecified() {
		t.Fatalf("socket bound to %v", la)
	}
	t.Logf("mappings: %v, after the flush %v, after %v -> %v: %v", m1, m2, old, now, m3)
}
