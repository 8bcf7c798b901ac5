package keytunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
	"github.com/keytunnel/keytunnel/internal/stack"
	"github.com/keytunnel/keytunnel/relay/dhtrelay"
)

func testnet(t *testing.T) *keytunnel.TestNetwork {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tn, err := keytunnel.Testnet(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	return tn
}

func newNode(t *testing.T, cfg keytunnel.Config) *keytunnel.Node {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n, err := keytunnel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// echoServer echoes every conn ln accepts until the test ends, sending
// each one's peer key on the channel it returns.
func echoServer(t *testing.T, ln net.Listener) <-chan string {
	keys := make(chan string, 100)
	proctest.ServeOn(t, ln, func(c net.Conn) {
		keys <- c.(*keytunnel.Conn).RemotePublicKey()
		io.Copy(c, c)
		c.(*keytunnel.Conn).CloseWrite()
	})
	return keys
}

// echo sends size random bytes through c, half-closes and checks that
// the same bytes come back.
func echo(t *testing.T, c net.Conn, size int) {
	t.Helper()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	msg := make([]byte, size)
	rand.Read(msg)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes: got %d intact=%v, %v", size, len(got), bytes.Equal(got, msg), err)
	}
}

// Dials from two nodes, concurrent, 1 MiB each, reach one Listen; each
// accepted conn names its dialer; Addrs are the keys.
func TestListenDial(t *testing.T) {
	tn := testnet(t)
	server := newNode(t, tn.Config())
	ln, err := server.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if ln.Addr().String() != server.PublicKey() || ln.Addr().Network() != "keytunnel" {
		t.Fatalf("Addr %v", ln.Addr())
	}
	keys := echoServer(t, ln)
	a, b := newNode(t, tn.Config()), newNode(t, tn.Config())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 6 {
		n := []*keytunnel.Node{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := n.Dial(ctx, server.PublicKey())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if c.RemoteAddr().String() != server.PublicKey() || c.LocalAddr().String() != n.PublicKey() {
				t.Errorf("addrs %v -> %v", c.LocalAddr(), c.RemoteAddr())
			}
			echo(t, c, 1<<20)
		}()
	}
	wg.Wait()
	count := map[string]int{}
	for range 6 {
		count[<-keys]++
	}
	if count[a.PublicKey()] != 3 || count[b.PublicKey()] != 3 {
		t.Fatalf("accepted conns by peer: %v", count)
	}
}

// A node with a Seed has the same key every time; Allow admits only the
// keys it names.
func TestSeedAndAllow(t *testing.T) {
	tn := testnet(t)
	seed := bytes.Repeat([]byte{7}, 32)
	cfg := tn.Config()
	cfg.Seed = seed
	friend := newNode(t, cfg)
	if again := newNode(t, cfg); again.PublicKey() != friend.PublicKey() {
		t.Fatalf("same seed, keys %s and %s", friend.PublicKey(), again.PublicKey())
	}
	stranger := newNode(t, tn.Config())
	server := newNode(t, tn.Config())
	ln, err := server.Listen(keytunnel.Allow(friend.PublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := friend.Dial(ctx, server.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c, 1000)
	c.Close()
	_, err = stranger.Dial(ctx, server.PublicKey())
	if !errors.Is(err, keytunnel.ErrRefused) {
		t.Fatalf("a key not in the allow list: %v, want ErrRefused", err)
	}
}

// Raw dials (hypertele's framing) reach a Listen too.
func TestRawDial(t *testing.T) {
	tn := testnet(t)
	server := newNode(t, tn.Config())
	ln, err := server.Listen()
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	client := newNode(t, tn.Config())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range 2 {
		c, err := client.Dial(ctx, server.PublicKey(), keytunnel.Raw())
		if err != nil {
			t.Fatal(err)
		}
		echo(t, c, 100_000)
		c.Close()
	}
}

func TestErrors(t *testing.T) {
	if _, err := keytunnel.New(keytunnel.Config{Seed: []byte("short")}); err == nil || !strings.Contains(err.Error(), "Seed") {
		t.Fatalf("short seed: %v", err)
	}
	if _, err := keytunnel.New(keytunnel.Config{RelayThrough: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "RelayThrough") {
		t.Fatalf("bad relay key: %v", err)
	}
	if _, err := keytunnel.New(keytunnel.Config{Relay: "http://x"}); err == nil || !strings.Contains(err.Error(), "scheme") {
		t.Fatalf("bad relay url: %v", err)
	}
	tn := testnet(t)
	n := newNode(t, tn.Config())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	other := newNode(t, tn.Config())
	if _, err := n.Dial(ctx, other.PublicKey()); !errors.Is(err, keytunnel.ErrNotFound) {
		t.Fatalf("dial to a key nobody listens on: %v", err)
	}
	if _, err := n.Dial(ctx, "not-a-key"); err == nil || !strings.Contains(err.Error(), "not a public key") {
		t.Fatalf("bad key: %v", err)
	}
	if _, err := n.Listen(keytunnel.Allow("zz")); err == nil || !strings.Contains(err.Error(), "Allow") {
		t.Fatalf("bad allow: %v", err)
	}
	ln, err := n.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Listen(); !errors.Is(err, keytunnel.ErrListening) {
		t.Fatalf("second Listen: %v", err)
	}
	if err := n.Expose(ctx, "1234"); !errors.Is(err, keytunnel.ErrListening) {
		t.Fatalf("Expose while listening: %v", err)
	}
	if err := n.Forward(ctx, n.PublicKey(), "nope"); err == nil || !strings.Contains(err.Error(), "want PORT, HOST:PORT or unix:PATH") {
		t.Fatalf("bad listen address: %v", err)
	}
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	ln, err = n.Listen() // the key is free again
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	n.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after the node's Close: %v", err)
	}
	if _, err := n.Dial(ctx, n.PublicKey()); !errors.Is(err, keytunnel.ErrClosed) {
		t.Fatalf("Dial after Close: %v", err)
	}
	if _, err := n.Listen(); !errors.Is(err, keytunnel.ErrClosed) {
		t.Fatalf("Listen after Close: %v", err)
	}
}

// The keytunnel binary's forward reaches a library Listen, and a library
// Dial reaches the binary's expose: the library speaks the command's
// sessions.
func TestCommandInterop(t *testing.T) {
	tn := testnet(t)
	bs := strings.Join(tn.Bootstrap, ",")
	server := newNode(t, tn.Config())
	ln, err := server.Listen()
	if err != nil {
		t.Fatal(err)
	}
	keys := echoServer(t, ln)
	fwd, local := proctest.Forward(t, bs, server.PublicKey())
	defer fwd.Stop()
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c, 1<<20)
	c.Close()
	if k := <-keys; len(k) != 64 {
		t.Fatalf("peer key %q", k)
	}

	exp, pub := proctest.Expose(t, bs, proctest.Echo(t))
	defer exp.Stop()
	client := newNode(t, tn.Config())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := client.Dial(ctx, pub)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, d, 1<<20)
	d.Close()
}

// Expose and Forward, the helpers, carry a TCP service between nodes.
func TestExposeForward(t *testing.T) {
	tn := testnet(t)
	target := proctest.Echo(t)
	server, client := newNode(t, tn.Config()), newNode(t, tn.Config())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errs := make(chan error, 2)
	local := net.JoinHostPort("127.0.0.1", itoa(proctest.FreeTCP(t)))
	wg.Add(2)
	go func() { defer wg.Done(); errs <- server.Expose(ctx, target) }()
	go func() { defer wg.Done(); errs <- client.Forward(ctx, server.PublicKey(), local) }()
	until(t, ctx, errs, "the forward never reached the exposed service", func() bool {
		c, err := net.Dial("tcp", local)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("x"))
		_, err = io.ReadFull(c, make([]byte, 1))
		return err == nil
	})
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c, 1<<20)
	c.Close()
	cancel()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("after ctx ended: %v", err)
		}
	}
}

// Config.Relay reaches the DHT through a dht-relay, with no UDP socket of
// its own: a node behind one dials a node on UDP and the other way round.
func TestRelay(t *testing.T) {
	tn := testnet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rn, err := stack.Start(ctx, stack.Options{Bootstrap: tn.Bootstrap, Host: "127.0.0.1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer rn.Close()
	srv := dhtrelay.NewServer(rn.Node, dhtrelay.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go srv.Serve(l)

	for _, nonCustodial := range []bool{false, true} {
		cfg := tn.Config()
		cfg.Relay, cfg.RelayNonCustodial = "tcp://"+l.Addr().String(), nonCustodial
		relayed := newNode(t, cfg)
		direct := newNode(t, tn.Config())
		ln, err := relayed.Listen()
		if err != nil {
			t.Fatal(err)
		}
		echoServer(t, ln)
		c, err := direct.Dial(ctx, relayed.PublicKey())
		if err != nil {
			t.Fatalf("non-custodial=%v: dial to the relayed node: %v", nonCustodial, err)
		}
		echo(t, c, 100_000)
		c.Close()

		ln2, err := direct.Listen()
		if err != nil {
			t.Fatal(err)
		}
		echoServer(t, ln2)
		c, err = relayed.Dial(ctx, direct.PublicKey())
		if err != nil {
			t.Fatalf("non-custodial=%v: dial from the relayed node: %v", nonCustodial, err)
		}
		echo(t, c, 100_000)
		c.Close()
		relayed.Close()
		direct.Close()
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// A Dial to a peer that does not answer keytunnel's preamble (a
// hypertele-style raw server) fails with ErrNotKeytunnel; Raw reaches it.
func TestDialRawServer(t *testing.T) {
	tn := testnet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sn, err := stack.Start(ctx, stack.Options{Bootstrap: tn.Bootstrap, Host: "127.0.0.1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	kp, err := key.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := sn.Node.Listen(ctx, kp, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The raw server greets first, as an SSH or SMTP server behind
	// hypertele-server would.
	proctest.ServeOn(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(c, "SSH-2.0-raw\r\n")
		io.Copy(io.Discard, c)
	})
	client := newNode(t, tn.Config())
	if _, err := client.Dial(ctx, kp.Public.String()); !errors.Is(err, keytunnel.ErrNotKeytunnel) {
		t.Fatalf("mux dial to a raw server: %v, want ErrNotKeytunnel", err)
	}
	c, err := client.Dial(ctx, kp.Public.Z32(), keytunnel.Raw())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, 13)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "SSH-2.0-raw\r\n" {
		t.Fatalf("raw dial read %q, %v", b, err)
	}
	if got := c.(*keytunnel.Conn).RemotePublicKey(); got != kp.Public.String() {
		t.Fatalf("RemotePublicKey %s, want %s", got, kp.Public)
	}
}

// A second node with the same Seed does not listen while the first
// serves the key (ErrServed); with Replace it takes the key over, and
// once it closes the first serves the key again.
func TestListenServedAndReplace(t *testing.T) {
	tn := testnet(t)
	seed := bytes.Repeat([]byte{7}, 32)
	cfg := tn.Config()
	cfg.Seed = seed
	first, second, client := newNode(t, cfg), newNode(t, cfg), newNode(t, tn.Config())
	ln1, err := first.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln1.Close()
	if _, err := second.Listen(); !errors.Is(err, keytunnel.ErrServed) {
		t.Fatalf("second Listen of a served key: %v, want ErrServed", err)
	}
	ln2, err := second.Listen(keytunnel.Replace())
	if err != nil {
		t.Fatalf("Listen with Replace: %v", err)
	}
	go func() {
		if c, err := ln2.Accept(); err == nil {
			c.Write([]byte("2"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if got := readOne(t, ctx, client, first.PublicKey()); got != "2" {
		t.Fatalf("after Replace the client reached %q, want the second node", got)
	}
	go func() {
		for {
			c, err := ln1.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("1"))
			c.Close()
		}
	}()
	ln2.Close()
	second.Close() // its session with the client ends, so the next Dial looks the key up
	deadline := time.Now().Add(30 * time.Second)
	for readOne(t, ctx, client, first.PublicKey()) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("the first node was not reachable again within 30 s of the second closing")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readOne dials remote and returns the first byte it sends ("" on errors).
func readOne(t *testing.T, ctx context.Context, n *keytunnel.Node, remote string) string {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := n.Dial(dctx, remote)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return ""
	}
	return string(b)
}

// Expose with Service serves a named target next to the default one;
// Dial and Forward reach it as KEY/NAME, and a name the peer lacks fails
// Dial with ErrRefused and the reason.
func TestExposeService(t *testing.T) {
	tn := testnet(t)
	dflt := proctest.Serve(t, func(c net.Conn) { c.Write([]byte("default\n")) })
	web := proctest.Serve(t, func(c net.Conn) { c.Write([]byte("web\n")) })
	server, client := newNode(t, tn.Config()), newNode(t, tn.Config())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	errs, done := make(chan error, 1), make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() { defer close(done); errs <- server.Expose(ctx, dflt, keytunnel.Service("web", web)) }()
	read := func(remote string) (string, error) {
		c, err := client.Dial(ctx, remote)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		return string(b), err
	}
	until(t, ctx, errs, "Dial never reached the default service", func() bool {
		got, err := read(server.PublicKey())
		return err == nil && got == "default\n"
	})
	if got, err := read(server.PublicKey() + "/web"); err != nil || got != "web\n" {
		t.Errorf("Dial KEY/web: %q, %v", got, err)
	}
	if _, err := read(server.PublicKey() + "/db"); !errors.Is(err, keytunnel.ErrRefused) || !strings.Contains(err.Error(), `no service "db"`) {
		t.Errorf("Dial KEY/db: %v, want ErrRefused naming db", err)
	}
	if _, err := read(server.PublicKey() + "/Bad"); err == nil {
		t.Error("Dial KEY/Bad: no error for an invalid name")
	}
}

// until polls ok every 50 ms until it holds; the test fails with what
// when ctx ends first, or when an Expose or Forward returns on errs.
func until(t *testing.T, ctx context.Context, errs <-chan error, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case err := <-errs:
			t.Fatalf("Expose or Forward returned: %v", err)
		case <-ctx.Done():
			t.Fatal(what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
