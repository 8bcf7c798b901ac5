package app

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/tunnel"
)

// joins checks that a fresh node, bootstrapping only from bootstrap, joins
// a network: its routing table gets nodes.
func joins(t *testing.T, bootstrap string) {
	t.Helper()
	for _, b := range strings.Split(bootstrap, ",") {
		ap, err := netip.ParseAddrPort(b)
		if err != nil || !ap.Addr().IsLoopback() {
			t.Fatalf("bootstrap %q is not a loopback host:port (%v)", b, err)
		}
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	n, err := dht.New(dht.Config{Conn: udp, Bootstrap: strings.Split(bootstrap, ",")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatalf("bootstrapping from %s: %v", bootstrap, err)
	}
	if st := n.State(); st.Nodes == 0 {
		t.Fatalf("bootstrapped from %s with an empty routing table", bootstrap)
	}
}

func TestTestnetPrintsUsableBootstrap(t *testing.T) {
	for _, jsonMode := range []bool{false, true} {
		env, out, _ := testEnv(t, nil)
		env.JSON = jsonMode
		stop, done := run(t, func(ctx context.Context) error {
			return Testnet(ctx, env, TestnetOptions{Nodes: 4})
		})
		line := out.waitLines(t, 1, 30*time.Second)[0]
		bs := line
		if jsonMode {
			ev := decode(t, line)
			if ev["event"] != EvTestnet || ev["nodes"] != float64(4) {
				t.Fatalf("testnet event %v", ev)
			}
			bs = ev["bootstrap"].(string)
		}
		joins(t, bs)
		select {
		case err := <-done:
			t.Fatalf("testnet returned early: %v", err)
		default:
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTestnetPortTaken(t *testing.T) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	port := udp.LocalAddr().(*net.UDPAddr).Port
	env, _, _ := testEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = Testnet(ctx, env, TestnetOptions{Nodes: 1, Port: port})
	if err == nil || err.Error() != "UDP port "+strconv.Itoa(port)+" is already in use" {
		t.Fatalf("err = %v", err)
	}
	for _, o := range []TestnetOptions{{Nodes: -1}, {Port: 70000}, {Host: "::1"}} {
		if err := Testnet(ctx, env, o); err == nil {
			t.Fatalf("%+v accepted", o)
		}
	}
}

func TestNodeCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tn, err := dht.Testnet(ctx, 3, nil) // 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()

	udpPort := func() int {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}()

	env, out, _ := testEnv(t, nil)
	env.Bootstrap = tn.Bootstrap
	env.JSON = true
	stop, _ := run(t, func(ctx context.Context) error {
		return Node(ctx, env, NodeOptions{Port: udpPort})
	})
	ev := decode(t, out.waitLines(t, 1, 30*time.Second)[0])
	addr, _ := ev["bootstrap"].(string)
	if ev["event"] != EvNode || !strings.HasSuffix(addr, ":"+strconv.Itoa(udpPort)) {
		t.Fatalf("node event %v (port %d)", ev, udpPort)
	}
	// A node that knows only our node joins the whole network.
	joins(t, "127.0.0.1:"+strconv.Itoa(udpPort))

	// The port is ours now: a second node on it fails with one line.
	env2, _, _ := testEnv(t, nil)
	env2.Bootstrap = tn.Bootstrap
	err = Node(ctx, env2, NodeOptions{Port: udpPort})
	if err == nil || err.Error() != "UDP port "+strconv.Itoa(udpPort)+" is already in use" {
		t.Fatalf("second node: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestJoinFailure(t *testing.T) {
	// A bound socket that never answers: the bootstrap node is silent.
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	env, _, _ := testEnv(t, nil)
	env.Bootstrap = []string{silent.LocalAddr().String()}
	env.JoinTimeout = 3 * time.Second
	start := time.Now()
	_, err = OpenDHT(context.Background(), env)
	if err == nil || !strings.HasPrefix(err.Error(), "could not join the DHT") || !strings.Contains(err.Error(), silent.LocalAddr().String()) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
	// Expose reports the same line and exits.
	env.KeyDir = t.TempDir()
	if err := Expose(context.Background(), env, ExposeOptions{Target: "8080"}); err == nil || !strings.HasPrefix(err.Error(), "could not join the DHT") {
		t.Fatalf("expose: %v", err)
	}
}

// dhtPair starts a loopback testnet and two DHT networks joined to it,
// all closed when the test ends; env is the Env they were opened with.
func dhtPair(t *testing.T, ctx context.Context) (env *Env, a, b Network) {
	t.Helper()
	tn, err := dht.Testnet(ctx, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	env, _, _ = testEnv(t, nil)
	env.Bootstrap = tn.Bootstrap
	if a, err = OpenDHT(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if b, err = OpenDHT(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return env, a, b
}

// TestDHTNetwork checks the adapters from dht.Node and dht.Listener to
// the tunnel's interfaces on a loopback testnet: keys on both ends,
// half-close, the allow list as a handshake firewall, Accept after Close.
func TestDHTNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, server, client := dhtPair(t, ctx)

	srvKP, _ := key.Generate(nil)
	friend, _ := key.Generate(nil)
	stranger, _ := key.Generate(nil)
	ln, err := server.Listen(ctx, srvKP, tunnel.NewAllowList(friend.Public), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.PublicKey() != srvKP.Public {
		t.Fatal("listener key")
	}
	accepted := make(chan tunnel.PeerConn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := client.Dialer(friend, nil).Dial(ctx, srvKP.Public)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RemotePublicKey() != srvKP.Public {
		t.Fatal("dialed conn names the wrong server")
	}
	var s tunnel.PeerConn
	select {
	case s = <-accepted:
	case <-ctx.Done():
		t.Fatal("no accept")
	}
	if s == nil {
		t.Fatal("accept failed")
	}
	defer s.Close()
	if s.RemotePublicKey() != friend.Public {
		t.Fatal("accepted conn names the wrong client")
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	s.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "hello")
	c.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "hello" {
		t.Fatalf("server read %q, %v", got, err)
	}
	io.WriteString(s, "back")
	s.CloseWrite()
	got, err = io.ReadAll(c)
	if err != nil || string(got) != "back" {
		t.Fatalf("client read %q, %v", got, err)
	}

	// The stranger is refused during the handshake, at once: a dial that
	// failed some other way, or timed out, is not a refusal.
	dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
	defer dcancel()
	start := time.Now()
	sc, err := client.Dialer(stranger, nil).Dial(dctx, srvKP.Public)
	took := time.Since(start)
	if err == nil {
		sc.Close()
		t.Fatal("a key outside the allow list got through the handshake")
	}
	var ce *dht.ConnectError
	if !errors.As(err, &ce) || ce.Code != dht.ErrRefused.Code || ce.Message != dht.ErrRefused.Message {
		t.Fatalf("stranger's dial: %v, want %v", err, dht.ErrRefused)
	}
	if took > 3*time.Second {
		t.Fatalf("stranger refused after %v, want under 3 s", took)
	}
	t.Logf("stranger refused after %v: %v", took.Round(time.Millisecond), err)
	ln.Close()
	if _, err := ln.Accept(); err == nil {
		t.Fatal("Accept after Close")
	}
}
