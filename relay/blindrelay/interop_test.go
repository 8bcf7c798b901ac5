package blindrelay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/protomux"
	"github.com/keytunnel/keytunnel/secretstream"
	"github.com/keytunnel/keytunnel/udx"
)

const script = "blindrelay-peer.js"

func loopback(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
}

func fields(t testing.TB, line string, n int) []int {
	t.Helper()
	f := strings.Fields(line)
	if len(f) < n {
		t.Fatalf("line %q: want %d fields", line, n)
	}
	out := make([]int, n)
	for i := range n {
		v, err := strconv.Atoi(f[i])
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out[i] = v
	}
	return out
}

// nodeClient starts a Node blind-relay client peer. connect is given the
// peer's port and connection stream id and returns the relay's stream id
// for that connection.
func nodeClient(t testing.TB, relayPort int, tok Token, initiator bool, size int, connect func(port, id int) int) *nodetest.Proc {
	t.Helper()
	p := nodetest.Start(t, script, "--role", "client", "--relay-port", strconv.Itoa(relayPort),
		"--token", hex.EncodeToString(tok[:]), "--initiator", strconv.FormatBool(initiator), "--size", strconv.Itoa(size))
	f := fields(t, p.Expect("ready ", 30*time.Second), 2)
	rid := connect(f[0], f[1])
	fmt.Fprintf(p.Stdin(), "relay %d\n", rid)
	return p
}

// acceptNode is the Go relay's side of a Node client's connection: a udx
// stream to it, the secret-stream responder, and the blind-relay session.
func acceptNode(t testing.TB, srv *Server, relaySock *udx.Socket, port, id int) int {
	t.Helper()
	rs := newStream(t, relaySock)
	if err := rs.Connect(relaySock, uint32(id), loopback(port)); err != nil {
		t.Fatal(err)
	}
	// The handshake needs the Node side, which learns our id only from
	// the return value: finish it in the background.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	done := make(chan struct{})
	var m *protomux.Mux
	go func() {
		defer close(done)
		ss, err := secretstream.Server(rs, secretstream.Options{})
		if err != nil {
			t.Error(err)
			return
		}
		if err := ss.Handshake(ctx); err != nil {
			t.Errorf("handshake with the Node client: %v", err)
			return
		}
		rpk := ss.RemotePublicKey()
		m, err = StartMux(protomux.SecretStream(ss), protomux.Options{}, func(m *protomux.Mux) error {
			_, err := srv.Accept(m, AcceptOptions{ID: rpk[:], RemoteAddr: loopback(port)})
			return err
		})
		if err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if m != nil {
			m.Close()
		}
	})
	return int(rs.ID())
}

// nodeResult is what a Node client peer reports after its transfer.
type nodeResult struct {
	sent  string
	recvN int
	recv  string
}

func waitNode(t testing.TB, p *nodetest.Proc, d time.Duration) nodeResult {
	t.Helper()
	r, err := waitNodeErr(p, d)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitNodeErr is waitNode for goroutines other than the test's.
func waitNodeErr(p *nodetest.Proc, d time.Duration) (nodeResult, error) {
	var r nodeResult
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	// "sent" and "recv" come in either order; "done" follows both.
	for {
		l, err := p.Line(ctx)
		if err != nil {
			return r, err
		}
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "sent":
			r.sent = f[1]
		case len(f) == 3 && f[0] == "recv":
			r.recvN, _ = strconv.Atoi(f[1])
			r.recv = f[2]
		case len(f) == 1 && f[0] == "done":
			return r, nil
		}
	}
}

// goSide runs the Go peer's half of a transfer with a Node peer: it sends
// n marked bytes and returns the SHA-256 of what it sent and received.
func goSide(t testing.TB, c *secretstream.Conn, n int) (sent, recv string, recvN int64) {
	t.Helper()
	data := markedData(t, n)
	c.SetDeadline(time.Now().Add(60 * time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := c.Write(data); err != nil {
			t.Errorf("write: %v", err)
		}
		c.CloseWrite()
	}()
	h := sha256.New()
	recvN, err := io.Copy(h, c)
	if err != nil {
		t.Errorf("read: %v", err)
	}
	wg.Wait()
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:]), hex.EncodeToString(h.Sum(nil)), recvN
}

// Node clients through a Go relay: a Node peer with a Go peer, and two
// Node peers; 16 MiB each way end to end, and the relay never sees the
// plaintext marker.
func TestInteropNodeClientGoServer(t *testing.T) {
	nodetest.Require(t)
	const n = 16 << 20
	t.Run("NodeGo", func(t *testing.T) {
		conntest.CheckGoroutines(t)
		srv, relaySock, tp := goRelay(t, ServerOptions{})
		tok := newToken(t)
		a := nodeClient(t, int(addrOf(relaySock).Port()), tok, true, n, func(port, id int) int {
			return acceptNode(t, srv, relaySock, port, id)
		})
		b := connectGo(t, srv, relaySock)
		rb, err := b.relayed(testCtx(t, 30*time.Second), t, false, tok)
		if err != nil {
			t.Fatal(err)
		}
		eb, err := secretstream.Server(rb, secretstream.Options{})
		if err != nil {
			t.Fatal(err)
		}
		sent, recv, recvN := goSide(t, eb, n)
		r := waitNode(t, a, 60*time.Second)
		if r.recv != sent || r.recvN != n || recv != r.sent || recvN != n {
			t.Fatalf("Node sent %s and received %d bytes %s; Go sent %s and received %d bytes %s", r.sent, r.recvN, r.recv, sent, recvN, recv)
		}
		if s := tp.sightings.Load(); s != 0 {
			t.Fatalf("the relay saw the plaintext marker in %d datagrams", s)
		}
		if st := srv.Stats(); st.Matched != 1 {
			t.Fatalf("stats: %+v", st)
		}
	})
	t.Run("NodeNode", func(t *testing.T) {
		conntest.CheckGoroutines(t)
		srv, relaySock, tp := goRelay(t, ServerOptions{})
		tok := newToken(t)
		port := int(addrOf(relaySock).Port())
		accept := func(p, id int) int { return acceptNode(t, srv, relaySock, p, id) }
		a := nodeClient(t, port, tok, true, n, accept)
		b := nodeClient(t, port, tok, false, n, accept)
		var rb nodeResult
		var errB error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); rb, errB = waitNodeErr(b, 60*time.Second) }()
		ra := waitNode(t, a, 60*time.Second)
		wg.Wait()
		if errB != nil {
			t.Fatal(errB)
		}
		if ra.sent != rb.recv || rb.sent != ra.recv || ra.recvN != n || rb.recvN != n {
			t.Fatalf("a %+v, b %+v", ra, rb)
		}
		if s := tp.sightings.Load(); s != 0 {
			t.Fatalf("the relay saw the plaintext marker in %d datagrams", s)
		}
	})
}

// nodeRelay is a Node blind-relay server process.
type nodeRelay struct {
	p    *nodetest.Proc
	port int
	mu   sync.Mutex // serialises conn requests (answers come in order)
}

func startNodeRelay(t testing.TB) *nodeRelay {
	t.Helper()
	p := nodetest.Start(t, script, "--role", "server")
	f := strings.Fields(p.Expect("ready ", 30*time.Second))
	port, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	return &nodeRelay{p: p, port: port}
}

// conn asks the Node relay for a stream connected to (port, id) and
// returns its id.
func (r *nodeRelay) conn(t testing.TB, port, id int) int {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.p.Stdin(), "conn %d %d\n", port, id)
	f := fields(t, r.p.Expect("conn ", 30*time.Second), 2)
	if f[0] != id {
		t.Fatalf("Node relay answered for stream %d, asked %d", f[0], id)
	}
	return f[1]
}

func (r *nodeRelay) stats(t testing.TB) map[string]int {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintln(r.p.Stdin(), "stats")
	var m map[string]int
	if err := json.Unmarshal([]byte(r.p.Expect("stats ", 30*time.Second)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// connectNodeRelay connects a new Go peer to the Node relay.
func connectNodeRelay(t testing.TB, r *nodeRelay) *peer {
	t.Helper()
	p := &peer{sock: loopbackSocket(t), kp: genKey(t)}
	p.conn = newStream(t, p.sock)
	rid := r.conn(t, int(addrOf(p.sock).Port()), int(p.conn.ID()))
	if err := p.conn.Connect(p.sock, uint32(rid), loopback(r.port)); err != nil {
		t.Fatal(err)
	}
	cs, err := secretstream.Client(p.conn, secretstream.Options{KeyPair: p.kp})
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Handshake(testCtx(t, 30*time.Second)); err != nil {
		t.Fatalf("handshake with the Node relay: %v", err)
	}
	p.startClient(t, cs)
	return p
}

// Go clients through a Node relay: two Go peers, and a Go peer with a
// Node peer; 16 MiB each way end to end.
func TestInteropGoClientNodeServer(t *testing.T) {
	nodetest.Require(t)
	const n = 16 << 20
	t.Run("GoGo", func(t *testing.T) {
		conntest.CheckGoroutines(t)
		r := startNodeRelay(t)
		a, b := connectNodeRelay(t, r), connectNodeRelay(t, r)
		if err := a.client.WaitOpen(testCtx(t, 10*time.Second)); err != nil {
			t.Fatalf("channel to the Node relay: %v", err)
		}
		tok := newToken(t)
		ra, rb := pairBoth(t, a, b, tok)
		ea, eb := secretPair(t, ra, rb, a.kp)
		d := exchange(t, ea, eb, n, 60*time.Second)
		t.Logf("2×%d MiB through the Node relay in %v", n>>20, d)
		if st := r.stats(t); st["matched"] != 1 || st["sessions"] != 2 {
			t.Fatalf("Node relay stats: %v", st)
		}
		// Unpair after the match: the Node relay drops the link.
		if err := a.client.Unpair(tok); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the Node relay to cancel the pairing", 10*time.Second, func() bool { return r.stats(t)["cancelled"] == 1 })
	})
	t.Run("GoNode", func(t *testing.T) {
		conntest.CheckGoroutines(t)
		r := startNodeRelay(t)
		tok := newToken(t)
		b := nodeClient(t, r.port, tok, false, n, func(port, id int) int { return r.conn(t, port, id) })
		a := connectNodeRelay(t, r)
		ra, err := a.relayed(testCtx(t, 30*time.Second), t, true, tok)
		if err != nil {
			t.Fatal(err)
		}
		ea, err := secretstream.Client(ra, secretstream.Options{KeyPair: a.kp})
		if err != nil {
			t.Fatal(err)
		}
		sent, recv, recvN := goSide(t, ea, n)
		res := waitNode(t, b, 60*time.Second)
		if res.recv != sent || res.recvN != n || recv != res.sent || recvN != n {
			t.Fatalf("Node sent %s and received %d bytes %s; Go sent %s and received %d bytes %s", res.sent, res.recvN, res.recv, sent, recvN, recv)
		}
	})
}
