package dht

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/udx"
)

// dropFirstData loses the first two udx DATA packets its socket sends,
// as a burst of loss on a bad path takes a dial's first packets. (One
// lost packet alone is recovered at once when the next one arrives and is
// selectively acked; the burst leaves nothing behind it to do that.)
type dropFirstData struct {
	net.PacketConn
	dropped atomic.Int32
}

func (d *dropFirstData) WriteTo(p []byte, a net.Addr) (int, error) {
	if d.dropped.Load() < 2 {
		var sacks [8]udx.SACKBlock
		if pk, err := udx.DecodePacket(p, sacks[:0]); err == nil && pk.Type&udx.FlagData != 0 && len(pk.Payload) > 0 && d.dropped.Add(1) <= 2 {
			return len(p), nil
		}
	}
	return d.PacketConn.WriteTo(p, a)
}

// lossyPeerNode is peerNode on a udx socket whose first DATA packet is
// lost.
func lossyPeerNode(t *testing.T, tn *TestNetwork, kp key.KeyPair) (*Node, *dropFirstData) {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &dropFirstData{PacketConn: pc}
	sock, err := udx.NewSocket(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	n := peerNodeOn(t, tn, kp, sock)
	return n, d
}

// TestDialFirstPacketLost: when the client's first two stream packets
// (secret-stream's header and the first echo) are lost, the echo still
// comes back within a few of the handshake's round trips, not after udx's
// 1 s initial RTO: the client gives its stream the PEER_HANDSHAKE's round
// trip as its RTT hint. (The server's hints depend on which side's packet
// connects the stream first, which this loopback setup does not fix; udx's
// TestRTTHint covers both kinds.)
func TestDialFirstPacketLost(t *testing.T) {
	tn := testnet(t, 3)
	ctx := testCtx(t, 30*time.Second)
	srv := peerNode(t, tn, seedKey(1))
	cli, drop := lossyPeerNode(t, tn, seedKey(2))
	l, err := srv.Listen(ctx, seedKey(3), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	echo(t, l)
	start := time.Now()
	c, err := cli.Dial(ctx, seedKey(3).Public, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if n := drop.dropped.Load(); n < 2 {
		t.Fatalf("%d DATA packets dropped, want 2: the test did not test anything", n)
	}
	t.Logf("dial and echo with the client's first two packets lost: %v", el)
	if el > 500*time.Millisecond {
		t.Fatalf("dial and echo took %v with two packets lost on loopback; a probe after the handshake's round trip would resend them in milliseconds, not after the 1 s RTO", el)
	}
}
