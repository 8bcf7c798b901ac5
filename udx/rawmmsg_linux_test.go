//go:build linux

package udx

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestBatchIORoundTrip: datagrams written in one batch arrive in order
// with their sender's address, through IPv4 and dual-stack IPv6 sockets
// (an IPv4 peer of an IPv6 socket is v4-mapped), and a datagram the
// kernel refuses is skipped without losing the rest of its batch.
func TestBatchIORoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, network, laddr string
		v6                   bool
	}{
		{"v4", "udp4", "127.0.0.1:0", false},
		{"v6-dual-stack", "udp", "[::]:0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := listenUDP(t, tc.network, tc.laddr)
			b := listenUDP(t, "udp4", "127.0.0.1:0")
			bio := newBatchIO(a, tc.v6, false, false)
			if bio == nil {
				t.Skip("no batch I/O on this platform")
			}
			bAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(b.LocalAddr().(*net.UDPAddr).Port))
			msgs := []txMsg{
				{b: []byte("one"), addr: bAddr},
				{b: []byte("two"), uaddr: net.UDPAddrFromAddrPort(bAddr)},
				// Port 0 is refused by the kernel: skipped, not fatal.
				{b: []byte("lost"), addr: netip.AddrPortFrom(bAddr.Addr(), 0)},
				{b: []byte("three"), addr: bAddr},
			}
			bio.write(msgs)
			b.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			aPort := uint16(a.LocalAddr().(*net.UDPAddr).Port)
			for _, want := range []string{"one", "two", "three"} {
				n, from, err := b.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("waiting for %q: %v", want, err)
				}
				if got := string(buf[:n]); got != want {
					t.Fatalf("got %q, want %q", got, want)
				}
				if from.Port() != aPort {
					t.Fatalf("from %v, want port %d", from, aPort)
				}
			}

			// And back: b sends three, a reads them in one or more batches.
			aDst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), aPort)
			for _, s := range []string{"x", "yy", "zzz"} {
				if _, err := b.WriteToUDPAddrPort([]byte(s), aDst); err != nil {
					t.Fatal(err)
				}
			}
			rx := make([]rxMsg, 8)
			for i := range rx {
				rx[i].buf = make([]byte, 64)
			}
			var got [][]byte
			a.SetReadDeadline(time.Now().Add(5 * time.Second))
			for len(got) < 3 {
				n, err := bio.read(rx)
				if err != nil {
					t.Fatalf("read after %d datagrams: %v", len(got), err)
				}
				for _, m := range rx[:n] {
					if m.addr.Addr().Unmap() != netip.MustParseAddr("127.0.0.1") || m.addr.Port() != bAddr.Port() {
						t.Fatalf("datagram from %v, want %v", m.addr, bAddr)
					}
					got = append(got, bytes.Clone(m.buf[:m.n]))
				}
			}
			if !bytes.Equal(bytes.Join(got, []byte(",")), []byte("x,yy,zzz")) {
				t.Fatalf("read %q", got)
			}
			// Nothing more: the next read waits for the deadline.
			a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := bio.read(rx); err == nil {
				t.Fatalf("read %d datagrams from an empty socket", n)
			}
		})
	}
}

func listenUDP(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP(network, ua)
	if err != nil {
		// No IPv6 here: the dual-stack batch path goes untested, which CI
		// must not allow.
		if os.Getenv("CI") != "" {
			t.Fatalf("%s %s: %v (CI must test the dual-stack batch path)", network, addr, err)
		}
		t.Skipf("%s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
