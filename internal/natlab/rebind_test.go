package natlab

import (
	"net"
	"net/netip"
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
	m1 := askWithin(t, c, srv, 10*time.Second)
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
	m2 := askWithin(t, c, srv, 10*time.Second)
	if !m2.IsValid() || m2 == m1 {
		t.Fatalf("after the flush the server saw %v, before %v: want a new mapping", m2, m1)
	}
	old := h.Addr()
	now := h.ChangeAddr()
	if now == old || h.Addr() != now || !now.Is4() || now.As4()[0] != 10 {
		t.Fatalf("ChangeAddr: %v -> %v (Addr %v)", old, now, h.Addr())
	}
	m3 := askWithin(t, c, srv, 10*time.Second)
	if !m3.IsValid() || m3 == m2 {
		t.Fatalf("after the address change the server saw %v, before %v: want a new mapping", m3, m2)
	}
	// The socket's local address is 0.0.0.0; a new one binds fine too.
	c2 := h.ListenUDP(0)
	if m := askWithin(t, c2, srv, 10*time.Second); !m.IsValid() {
		t.Fatal("a new socket gets no echo after the address change")
	}
	if la := c.LocalAddr().(*net.UDPAddr); !la.IP.IsUnspecified() {
		t.Fatalf("socket bound to %v", la)
	}
	t.Logf("mappings: %v, after the flush %v, after %v -> %v: %v", m1, m2, old, now, m3)
}

// askWithin is ask, repeated until an answer comes or d passes: ask gives
// up after 0.9 s, and a lab's first packets (or a host's first from a new
// address, which the router must resolve) once took longer on the loaded
// machine.
func askWithin(t *testing.T, c *net.UDPConn, to netip.AddrPort, d time.Duration) netip.AddrPort {
	t.Helper()
	var m netip.AddrPort
	for end := time.Now().Add(d); !m.IsValid() && time.Now().Before(end); {
		m = ask(t, c, to)
	}
	return m
}
