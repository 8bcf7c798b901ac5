package bench

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/ipv4"
)

// The UDP floor is what a plain UDP tunnel of two processes carries on
// this machine: two bare relays, run as processes on one P like
// keytunnel, the client's side reading datagrams from its local socket
// and sending each to the other relay, which sends it on to the service
// from a connected socket, and replies back the same way, in batches
// (golang.org/x/net's recvmmsg and sendmmsg). No encryption, no framing,
// one flow: what is left is the system calls and wake-ups that such a
// tunnel pays for a datagram (client to relay, relay to relay, relay to
// service). It is not a lower bound: keytunnel's raw system calls and
// GSO (udx.BatchWriter) save what its encryption costs. BenchmarkUDP runs
// it as its "floor" path.
//
// The relays are this test binary started again with udpFloorRoleEnv set.

const udpFloorRoleEnv = "KEYTUNNEL_BENCH_UDPFLOOR"

func viaUDPFloor(tb testing.TB, svc string) (string, []int) {
	return startRelays(tb, udpFloorRoleEnv, "server", "client", svc, "udp ")
}

// runUDPFloor serves as one UDP relay if the environment asks for it,
// until killed, and reports whether it did.
func runUDPFloor() bool {
	v := os.Getenv(udpFloorRoleEnv)
	if v == "" {
		return false
	}
	role, arg, _ := strings.Cut(v, " ")
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fail(err)
		}
		c.SetReadBuffer(4 << 20) // as keytunnel's sockets
		c.SetWriteBuffer(4 << 20)
		return c
	}
	to, err := net.ResolveUDPAddr("udp4", arg)
	if err != nil {
		fail(err)
	}
	switch role {
	case "server":
		// Datagrams from the other relay go to the service on a
		// connected socket; its replies go back to that relay.
		pc := listen()
		svc, err := net.DialUDP("udp4", nil, to)
		if err != nil {
			fail(err)
		}
		svc.SetReadBuffer(4 << 20)
		var peer atomic.Pointer[net.UDPAddr]
		fmt.Println("udp", pc.LocalAddr())
		go relayBatches(svc, pc, func() net.Addr { return peer.Load() }, nil)
		relayBatches(pc, svc, nil, func(a net.Addr) { peer.Store(a.(*net.UDPAddr)) })
	case "client":
		// Datagrams from the client go to the other relay; its replies
		// go to the client that last sent.
		local, pc := listen(), listen()
		var client atomic.Pointer[net.UDPAddr]
		fmt.Println("udp", local.LocalAddr())
		go relayBatches(pc, local, func() net.Addr { return client.Load() }, nil)
		relayBatches(local, pc, func() net.Addr { return to }, func(a net.Addr) { client.Store(a.(*net.UDPAddr)) })
	default:
		fail(fmt.Errorf("unknown role %q", role))
	}
	return true
}

// relayBatches reads batches of datagrams from in and writes them to out
// (to dst, or out's connected address when dst is nil), telling from about
// each sender, until in fails.
func relayBatches(in, out *net.UDPConn, dst func() net.Addr, from func(net.Addr)) {
	const batch = 64
	r, w := ipv4.NewPacketConn(in), ipv4.NewPacketConn(out)
	ms := make([]ipv4.Message, batch)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 65536)}
	}
	ws := make([]ipv4.Message, batch)
	for {
		n, err := r.ReadBatch(ms, 0)
		if err != nil {
			os.Exit(1)
		}
		var to net.Addr
		if dst != nil {
			if to = dst(); to == nil || to.(*net.UDPAddr) == nil {
				continue // no reply address yet
			}
		}
		for i, m := range ms[:n] {
			if from != nil {
				from(m.Addr)
			}
			ws[i] = ipv4.Message{Buffers: [][]byte{m.Buffers[0][:m.N]}, Addr: to}
		}
		for sent := 0; sent < n; {
			k, err := w.WriteBatch(ws[sent:n], 0)
			if err != nil {
				break // a refused datagram (nothing listening yet) is lost
			}
			sent += k
		}
	}
}
