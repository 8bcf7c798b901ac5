package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/relay/dhtrelay"
)

// goDHTRelay runs `keytunnel dht-relay` on loopback and returns its URL.
func goDHTRelay(t *testing.T, boot []string, ws bool) string {
	t.Helper()
	env, out, _ := testEnv(t, nil)
	env.Bootstrap = boot
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	run(t, func(ctx context.Context) error { return DHTRelay(ctx, env, DHTRelayOptions{WS: ws, Listener: l}) })
	u := strings.TrimSpace(out.waitLines(t, 1, 30*time.Second)[0])
	want := "tcp://"
	if ws {
		want = "ws://"
	}
	if !strings.HasPrefix(u, want) {
		t.Fatalf("dht-relay printed %q", u)
	}
	return u
}

// nodeDHTRelay runs the reference relay (interop/dhtrelay-node.js).
func nodeDHTRelay(t *testing.T, boot []string, transport string) string {
	t.Helper()
	p := nodetest.Start(t, "dhtrelay-node.js", "relay", transport, strings.Join(boot, ","))
	port := strings.TrimSpace(p.Expect("listening ", 60*time.Second))
	return transport + "://127.0.0.1:" + port
}

// relayEnv is an Env whose network is the dht-relay at url.
func relayEnv(t *testing.T, url string, o DHTRelayClientOptions) (*Env, *lineBuffer) {
	t.Helper()
	env, out, _ := testEnv(t, nil)
	env.Bootstrap = []string{"127.0.0.1:1"} // a relayed command never uses it
	open, err := RelayNetwork(url, o)
	if err != nil {
		t.Fatal(err)
	}
	env.OpenNetwork = open
	return env, out
}

// bulkEcho pushes size random bytes through c and checks the echo.
func bulkEcho(t *testing.T, c net.Conn, size int) time.Duration {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	c.SetDeadline(time.Now().Add(180 * time.Second))
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if n != int64(size) || [32]byte(h.Sum(nil)) != sha256.Sum256(data) {
		t.Fatalf("echo: %d bytes, want %d, equal %v", n, size, [32]byte(h.Sum(nil)) == sha256.Sum256(data))
	}
	return time.Since(start)
}

// TestExposeForwardThroughDHTRelays: `keytunnel --relay … expose` and
// `keytunnel --relay … forward` carry 64 MiB intact, each through its own
// relay: Go and Node relays, TCP and WebSocket; non-custodial through Go
// relays (and the Node relay for forward, which only dials).
func TestExposeForwardThroughDHTRelays(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tn, err := dht.Testnet(ctx, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	echo := echoServer(t)
	cases := []struct {
		name          string
		expose, fwd   string // go|node
		exposeT, fwdT string // tcp|ws
		nonCustodial  bool
	}{
		{"GoTCP-GoWS", "go", "go", "tcp", "ws", false},
		{"GoWS-NodeTCP", "go", "node", "ws", "tcp", false},
		{"NodeWS-GoTCP", "node", "go", "ws", "tcp", false},
		{"NonCustodial-GoWS-GoTCP", "go", "go", "ws", "tcp", true},
		{"NonCustodial-GoTCP-NodeWS", "go", "node", "tcp", "ws", true},
	}
	relayURL := func(t *testing.T, impl, tr string) string {
		if impl == "node" {
			nodetest.Require(t)
			return nodeDHTRelay(t, tn.Bootstrap, tr)
		}
		return goDHTRelay(t, tn.Bootstrap, tr == "ws")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eurl := relayURL(t, tc.expose, tc.exposeT)
			furl := relayURL(t, tc.fwd, tc.fwdT)
			skp, _ := key.Generate(nil)
			o := DHTRelayClientOptions{NonCustodial: tc.nonCustodial}
			eenv, eout := relayEnv(t, eurl, o)
			run(t, func(ctx context.Context) error {
				return Expose(ctx, eenv, ExposeOptions{Target: echo, Key: KeyOptions{Seed: fmt.Sprintf("%x", skp.Seed())}})
			})
			if got := eout.waitLines(t, 1, 60*time.Second)[0]; got != skp.Public.String() {
				t.Fatalf("expose printed %q", got)
			}
			fenv, fout := relayEnv(t, furl, o)
			port := freePort(t)
			run(t, func(ctx context.Context) error {
				return Forward(ctx, fenv, ForwardOptions{Remote: skp.Public.String(), Listen: fmt.Sprint(port)})
			})
			fout.waitLines(t, 1, 30*time.Second)
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			roundTrip(t, c, "hello through two relays\n")
			c.Close()
			c2, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			const size = 64 << 20
			d := bulkEcho(t, c2, size)
			t.Logf("64 MiB echoed through %s/%s and %s/%s relays in %v (%.1f MB/s each way)",
				tc.expose, tc.exposeT, tc.fwd, tc.fwdT, d.Round(time.Millisecond), float64(size)/d.Seconds()/1e6)
		})
	}
}

// TestRelayURLErrors: a bad --relay is one clear line.
func TestRelayURLErrors(t *testing.T) {
	for _, u := range []string{"", "http://x:1", "tcp://host", "nonsense"} {
		if _, err := RelayNetwork(u, DHTRelayClientOptions{}); err == nil || !strings.Contains(err.Error(), "--relay") {
			t.Errorf("RelayNetwork(%q) = %v", u, err)
		}
	}
	env, _ := relayEnv(t, "tcp://127.0.0.1:1", DHTRelayClientOptions{})
	env.JoinTimeout = 3 * time.Second
	err := Expose(context.Background(), env, ExposeOptions{Target: "1"})
	if err == nil || !strings.Contains(err.Error(), "could not reach the dht-relay") {
		t.Fatalf("expose through a relay that is not there: %v", err)
	}
}

// TestExposeNonCustodialNodeRelayFails: the Node relay confirms a
// non-custodial listen whose announce it cannot sign; expose must fail
// with a line that says so instead of serving a key no client can find.
func TestExposeNonCustodialNodeRelayFails(t *testing.T) {
	nodetest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tn, err := dht.Testnet(ctx, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	env, out := relayEnv(t, nodeDHTRelay(t, tn.Bootstrap, "ws"), DHTRelayClientOptions{NonCustodial: true})
	// It must fail on its own, well before this deadline.
	ectx, ecancel := context.WithTimeout(ctx, 60*time.Second)
	defer ecancel()
	err = Expose(ectx, env, ExposeOptions{Target: echoServer(t)})
	if !errors.Is(err, dhtrelay.ErrNotAnnounced) || !strings.Contains(err.Error(), "dht-relay") {
		t.Fatalf("expose: %v, want ErrNotAnnounced naming the remedy", err)
	}
	t.Logf("expose: %v", err)
	if s := out.String(); s != "" {
		t.Fatalf("expose printed %q before failing", s)
	}
}
