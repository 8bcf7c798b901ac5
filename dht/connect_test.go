package dht

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"github.com/keytunnel/keytunnel/udx"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
)

// peerNode starts a node outside the testnet (ephemeral, firewalled until
// dht-rpc learns otherwise), as users run one.
func peerNode(t testing.TB, tn *TestNetwork, kp key.KeyPair) *Node {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return peerNodeOn(t, tn, kp, conn)
}

// peerNodeOn is peerNode on conn.
func peerNodeOn(t testing.TB, tn *TestNetwork, kp key.KeyPair, conn rpc.PacketConn) *Node {
	t.Helper()
	n, err := New(Config{Conn: conn, Bootstrap: tn.Bootstrap, KeyPair: kp, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// echo serves l: every connection gets back what it sends.
func echo(t testing.TB, l *Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*Conn).CloseWrite()
			}()
		}
	}()
}

// roundTrip writes size random bytes, half-closes, and checks that the
// same bytes come back.
func roundTrip(t testing.TB, c *Conn, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo differs: %d bytes back of %d", len(got), len(data))
	}
}

func TestDialListen(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 60*time.Second)
	srv := peerNode(t, tn, seedKey(1))
	cli := peerNode(t, tn, seedKey(2))
	l, err := srv.Listen(ctx, seedKey(3), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	echo(t, l)
	t.Logf("server %+v client %+v", srv.State(), cli.State())
	for i := range 3 {
		start := time.Now()
		c, err := cli.Dial(ctx, seedKey(3).Public, nil)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Logf("dial %d: %v (remote %v)", i, time.Since(start), c.RemoteAddr())
		if c.RemotePublicKey() != seedKey(3).Public {
			t.Fatalf("remote key %v", c.RemotePublicKey())
		}
		roundTrip(t, c, 1<<20)
		c.Close()
	}
	// A second Listen on the same key pair is refused.
	if _, err := srv.Listen(ctx, seedKey(3), nil); !errors.Is(err, ErrKeyPairAlreadyUsed) {
		t.Fatalf("second listen: %v", err)
	}
}

// firewalledPair starts a server node listening on seedKey(3), whose
// firewall admits only seedKey(7), and a client node.
func firewalledPair(t *testing.T, ctx context.Context) (srv, cli *Node, l *Listener) {
	t.Helper()
	tn := testnet(t, 5)
	srv = peerNode(t, tn, seedKey(1))
	cli = peerNode(t, tn, seedKey(2))
	allowed := seedKey(7).Public
	l, err := srv.Listen(ctx, seedKey(3), &ListenOptions{Firewall: func(remote key.PublicKey, _ netip.AddrPort) bool {
		return remote != allowed
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return srv, cli, l
}

func TestDialFirewallDenies(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	_, cli, l := firewalledPair(t, ctx)
	accepted := make(chan struct{}, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	start := time.Now()
	_, err := cli.Dial(ctx, seedKey(3).Public, nil)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("denied dial: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("refusal took %v", d)
	}
	t.Logf("denied after %v: %v", time.Since(start), err)
	c, err := cli.Dial(ctx, seedKey(3).Public, &DialOptions{KeyPair: seedKey(7)})
	if err != nil {
		t.Fatalf("allowed dial: %v", err)
	}
	c.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("allowed connection never accepted")
	}
	if len(accepted) != 0 {
		t.Fatal("a denied connection was accepted")
	}
}

func TestDialUnknownKey(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 60*time.Second)
	cli := peerNode(t, tn, seedKey(2))
	start := time.Now()
	_, err := cli.Dial(ctx, seedKey(99).Public, nil)
	if !errors.Is(err, ErrPeerNotFound) {
		t.Fatalf("dial of an unknown key: %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("PEER_NOT_FOUND took %v", d)
	}
}

func TestListenCloseUnannounces(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 60*time.Second)
	srv := peerNode(t, tn, seedKey(1))
	l, err := srv.Listen(ctx, seedKey(3), nil)
	if err != nil {
		t.Fatal(err)
	}
	found := func() bool {
		s := tn.Nodes[1].FindPeer(ctx, seedKey(3).Public)
		defer s.Close()
		for {
			if _, err := s.Next(ctx); err != nil {
				return false
			}
			return true
		}
	}
	if !found() {
		t.Fatal("listener not announced")
	}
	l.Close()
	l.Close()
	if found() {
		t.Fatal("listener still announced after Close")
	}
	if _, err := l.Accept(); !errors.Is(err, ErrListenerClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}

var _ = bytes.Equal
var _ = rpc.Persistent

// TestReusableRoute: with ReusableSocket on both sides, a second Dial goes
// straight to the server's path (no FIND_PEER: it works even when the
// server's announce is gone), and a stale route falls back to the lookup.
func TestReusableRoute(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 60*time.Second)
	srv := peerNode(t, tn, seedKey(41))
	cli := peerNode(t, tn, seedKey(42))
	l, err := srv.Listen(ctx, seedKey(43), &ListenOptions{ReusableSocket: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	echo(t, l)
	opts := &DialOptions{ReusableSocket: true}
	c, err := cli.Dial(ctx, seedKey(43).Public, opts)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, 1024)
	c.Close()
	if _, ok := cli.route(seedKey(43).Public); !ok {
		t.Fatal("no route remembered")
	}
	// Remove the server's announce from the DHT: only the route can work.
	pk := seedKey(43).Public
	for _, nd := range tn.Nodes {
		nd.store.DeleteForward(Hash(pk[:]), time.Now())
	}
	c, err = cli.Dial(ctx, seedKey(43).Public, opts)
	if err != nil {
		t.Fatalf("dial over the reused route: %v", err)
	}
	roundTrip(t, c, 1024)
	c.Close()
	// Without ReusableSocket the lookup is used, and finds nothing now.
	if _, err := cli.Dial(ctx, seedKey(43).Public, nil); !errors.Is(err, ErrPeerNotFound) && !errors.Is(err, ErrPeerConnectionFailed) {
		t.Fatalf("dial without the route: %v", err)
	}
}

// TestDialDirectDespiteUnknownRelay: a server configured with a blind
// relay that no node knows (a typo, a relay that is down) still takes a
// direct connection. The pairing fails within milliseconds, usually
// before the client's first packet reaches the server; that used to end
// the connection on the server while the client, its handshake done,
// sent into the void and reported "peer did not answer". Both sides
// asking for the relay is the same race.
func TestDialDirectDespiteUnknownRelay(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 90*time.Second)
	// An open server (as a host with a public address is): it waits
	// for the client's first packet instead of punching.
	sconn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Conn: sconn, Bootstrap: tn.Bootstrap, KeyPair: seedKey(1), NotFirewalled: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if err := srv.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	nobody := seedKey(9).Public
	l, err := srv.Listen(ctx, seedKey(3), &ListenOptions{RelayThrough: RelayKeys(nobody)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	echo(t, l)
	for i := range 6 {
		// A fresh client, firewalled as far as it knows (so the server
		// waits for its first packet rather than connecting to it), whose stream packets leave 600 ms late: the pairing
		// fails before the first of them arrives, as it did between
		// processes under load.
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		sock, err := udx.NewSocket(&lateStream{PacketConn: conn, delay: 600 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sock.Close() })
		cli, err := New(Config{Conn: sock, Bootstrap: tn.Bootstrap, KeyPair: seedKey(byte(20 + i)), Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		if err := cli.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		opts := &DialOptions{}
		if i%2 == 1 {
			opts.RelayThrough = RelayKeys(nobody)
		}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		c, err := cli.Dial(dctx, seedKey(3).Public, opts)
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatalf("dial %d: write: %v", i, err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
			t.Fatalf("dial %d (client asks for the relay too: %v): echo %q, %v: the server dropped the direct connection", i, i%2 == 1, got, err)
		}
		c.Close()
	}
}

// lateStream delays the udx packets it sends (those starting with udx's
// magic byte, 0xff) and passes everything else (DHT messages, punches)
// at once.
type lateStream struct {
	net.PacketConn
	delay time.Duration
}

func (c *lateStream) WriteTo(p []byte, addr net.Addr) (int, error) {
	if len(p) == 0 || p[0] != 0xff {
		return c.PacketConn.WriteTo(p, addr)
	}
	b := bytes.Clone(p)
	time.AfterFunc(c.delay, func() { c.PacketConn.WriteTo(b, addr) })
	return len(p), nil
}
