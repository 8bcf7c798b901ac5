package dhtrelay

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
)

func testLogger() *slog.Logger {
	if os.Getenv("DHTRELAY_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// flightRecorder is a debug logger that keeps its last 300 lines and
// logs them when the test fails: an interop failure that only CI sees
// (a dial through the Node relay that hung) then shows what the Go side
// was doing.
func flightRecorder(t testing.TB, name string) *slog.Logger {
	r := &recorder{}
	t.Cleanup(func() {
		if t.Failed() {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Logf("%s's last %d log lines:\n%s", name, len(r.lines), strings.Join(r.lines, ""))
		}
	})
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) == 300 {
		r.lines = r.lines[1:]
	}
	r.lines = append(r.lines, string(p))
	return len(p), nil
}

// testnet starts a loopback DHT of n nodes.
func testnet(t testing.TB, n int) *dht.TestNetwork {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tn, err := dht.Testnet(ctx, n, &dht.TestnetOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	return tn
}

// peerNode starts an ephemeral node on loopback joined to tn.
func peerNode(t testing.TB, tn *dht.TestNetwork) *dht.Node {
	t.Helper()
	return peerNodeLogged(t, tn, testLogger())
}

// peerNodeLogged is peerNode logging to log.
func peerNodeLogged(t testing.TB, tn *dht.TestNetwork, log *slog.Logger) *dht.Node {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := dht.New(dht.Config{Conn: conn, Bootstrap: tn.Bootstrap, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func newKey(t testing.TB) key.KeyPair {
	kp, err := key.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// echoConns serves accept: every connection gets back what it sends.
func echoConns(accept func() (net.Conn, error)) {
	go func() {
		for {
			c, err := accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
			}()
		}
	}()
}

// echoListener listens on node with a fresh key pair and echoes every
// connection until the test ends.
func echoListener(t testing.TB, ctx context.Context, node *dht.Node) key.PublicKey {
	t.Helper()
	kp := newKey(t)
	l, err := node.Listen(ctx, kp, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	echoConns(l.Accept)
	return kp.Public
}

// udpEcho dials pk from node (over UDP) and round-trips size bytes.
func udpEcho(t testing.TB, ctx context.Context, node *dht.Node, pk key.PublicKey, size int) {
	t.Helper()
	c, err := node.Dial(ctx, pk, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", pk, err)
	}
	defer c.Close()
	roundTrip(t, c, size)
}

// roundTrip writes size random bytes, half-closes and checks that the
// same bytes come back; it returns the elapsed time.
func roundTrip(t testing.TB, c net.Conn, size int) time.Duration {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	return roundTripData(t, c, data)
}

// roundTripData is roundTrip with the bytes given.
func roundTripData(t testing.TB, c net.Conn, data []byte) time.Duration {
	t.Helper()
	c.SetDeadline(time.Now().Add(120 * time.Second))
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got %d of %d bytes)", err, len(got), len(data))
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("echo differs: got %d bytes, want %d", len(got), len(data))
	}
	return time.Since(start)
}

// goRelay starts a Go relay for node on loopback and returns its URL.
func goRelay(t testing.TB, node *dht.Node, transport string, opts ServerOptions) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	s := NewServer(node, opts)
	t.Cleanup(func() { s.Close() })
	switch transport {
	case "tcp":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(l)
		return s, "tcp://" + l.Addr().String()
	case "ws":
		hs := httptest.NewServer(s)
		t.Cleanup(func() { s.Close(); hs.Close() })
		return s, "ws" + strings.TrimPrefix(hs.URL, "http")
	}
	t.Fatalf("transport %q", transport)
	return nil, ""
}

func dialClient(t testing.TB, url string, opts ClientOptions) *Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialClient(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGoRelayGoClient: a Go client through a Go relay dials a UDP server,
// serves a UDP client, and looks up and announces, over both transports,
// custodial and not.
func TestGoRelayGoClient(t *testing.T) {
	tn := testnet(t, 3)
	relayNode := peerNode(t, tn)
	serverNode := peerNode(t, tn)
	for _, tr := range []string{"tcp", "ws"} {
		for _, mode := range []string{"custodial", "noncustodial"} {
			t.Run(tr+"/"+mode, func(t *testing.T) {
				ctx := testCtx(t, 90*time.Second)
				_, url := goRelay(t, relayNode, tr, ServerOptions{})
				c := dialClient(t, url, ClientOptions{NonCustodial: mode == "noncustodial"})

				// Dial a UDP server through the relay.
				spk := echoListener(t, ctx, serverNode)
				conn, err := c.Dial(ctx, spk, nil)
				if err != nil {
					t.Fatal(err)
				}
				if conn.RemotePublicKey() != spk {
					t.Fatalf("remote key %s", conn.RemotePublicKey())
				}
				roundTrip(t, conn, 4<<20)
				conn.Close()

				// Listen through the relay; a UDP client dials it.
				ckp := newKey(t)
				rl, err := c.Listen(ctx, ckp, nil)
				if err != nil {
					t.Fatal(err)
				}
				echoConns(rl.Accept)
				udpEcho(t, ctx, serverNode, ckp.Public, 4<<20)
				if err := rl.Close(); err != nil {
					t.Fatal(err)
				}

				// Announce, lookup, unannounce.
				topic := dht.Hash([]byte("dhtrelay test topic " + tr + mode))
				akp := newKey(t)
				if err := c.Announce(ctx, topic, akp); err != nil {
					t.Fatal(err)
				}
				if !lookupHas(t, ctx, c, topic, akp.Public) {
					t.Fatal("lookup after announce does not find the key")
				}
				if err := c.Unannounce(ctx, topic, akp); err != nil {
					t.Fatal(err)
				}
				if lookupHas(t, ctx, c, topic, akp.Public) {
					t.Fatal("lookup after unannounce still finds the key")
				}
			})
		}
	}
}

func lookupHas(t testing.TB, ctx context.Context, c *Client, topic [32]byte, pk key.PublicKey) bool {
	t.Helper()
	found, err := c.lookupHas(ctx, topic, pk)
	if err != nil {
		t.Fatal(err)
	}
	return found
}
