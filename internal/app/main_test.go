package app

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
	"github.com/keytunnel/keytunnel/internal/stack"
	"github.com/keytunnel/keytunnel/tunnel"
)

// TestMain fails the package when goroutines of this module outlive the
// tests.
func TestMain(m *testing.M) { proctest.MainNoLeaks(m) }

// lineBuffer is a goroutine-safe output buffer whose lines tests wait for.
// Unlike proctest.Lines.All, Lines counts a last line that has no newline
// yet.
type lineBuffer struct{ out proctest.Lines }

func (b *lineBuffer) Write(p []byte) (int, error) { return b.out.Write(p) }
func (b *lineBuffer) String() string              { return b.out.String() }

func (b *lineBuffer) Lines() []string {
	s := strings.TrimRight(b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// waitLine waits for a line containing sub and returns it.
func (b *lineBuffer) waitLine(t testing.TB, sub string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, l := range b.Lines() {
			if strings.Contains(l, sub) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q within %v; output:\n%s", sub, d, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLines waits for at least n lines.
func (b *lineBuffer) waitLines(t testing.TB, n int, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if ls := b.Lines(); len(ls) >= n {
			return ls
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d lines within %v; output:\n%s", n, d, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testEnv is an Env on the fake network with captured output.
func testEnv(t *testing.T, fn *fakeNet) (*Env, *lineBuffer, *lineBuffer) {
	t.Helper()
	out, errb := &lineBuffer{}, &lineBuffer{}
	env := &Env{
		Stdin:       strings.NewReader(""),
		Stdout:      out,
		Stderr:      errb,
		Host:        "127.0.0.1",
		Bootstrap:   []string{"127.0.0.1:1"}, // never used by the fake; never the public nodes
		KeyDir:      t.TempDir(),
		RunDir:      t.TempDir(),
		JoinTimeout: 5 * time.Second,
	}
	if fn != nil {
		env.OpenNetwork = fn.open
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", out, errb)
		}
	})
	return env, out, errb
}

// run starts f in a goroutine bound to a context the test cancels at its
// end; the returned function cancels and waits (bounded) for f's result.
func run(t *testing.T, f func(ctx context.Context) error) (stop func() error, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- f(ctx) }()
	var once sync.Once
	var res error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case res = <-ch:
			case <-time.After(15 * time.Second):
				res = errors.New("command did not return within 15 s of cancellation")
				t.Error(res)
			}
		})
		return res
	}
	t.Cleanup(func() { stop() })
	return stop, ch
}

// fakeNet stands in for the DHT as tunnel's tests do: Dial makes a
// loopback TCP pair (which has the half-close a PeerConn needs) and hands
// one end to the listener registered for the key.
type fakeNet struct {
	t     testing.TB
	tcp   net.Listener
	mu    sync.Mutex
	lns   map[key.PublicKey]*fakeListener
	id    key.KeyPair
	opens atomic.Int64
	dials atomic.Int64
	pairs []net.Conn
	// relays: what each Listen ("listen " + key) and Dialer ("dial " +
	// the key dialled, recorded at Dial) asked for; "inherit" for nil.
	relays map[string]string
}

// relayName renders a Network relay argument for fakeNet.relays.
func relayName(r []key.PublicKey) string {
	if r == nil {
		return "inherit"
	}
	var b strings.Builder
	b.WriteString("[")
	for i, k := range r {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(k.String()[:8])
	}
	b.WriteString("]")
	return b.String()
}

// relayOf is what a Listen on k or a dial to k ("listen", "dial") asked
// for, "" if nothing was recorded.
func (n *fakeNet) relayOf(op string, k key.PublicKey) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.relays[op+" "+k.String()]
}

func newFakeNet(t testing.TB) *fakeNet {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	id, _ := key.Generate(nil)
	n := &fakeNet{t: t, tcp: l, lns: map[key.PublicKey]*fakeListener{}, id: id, relays: map[string]string{}}
	t.Cleanup(func() {
		l.Close()
		n.mu.Lock()
		for _, c := range n.pairs {
			c.Close()
		}
		n.mu.Unlock()
	})
	return n
}

func (n *fakeNet) open(ctx context.Context, env *Env) (Network, error) {
	n.opens.Add(1)
	return &fakeNetwork{n: n}, nil
}

// fakeNetwork is one opened Network; Close closes its listeners.
type fakeNetwork struct {
	n      *fakeNet
	mu     sync.Mutex
	lns    []*fakeListener
	closed bool
}

func (w *fakeNetwork) Close() error {
	w.mu.Lock()
	lns := w.lns
	w.closed = true
	w.mu.Unlock()
	for _, l := range lns {
		l.Close()
	}
	return nil
}

func (w *fakeNetwork) Dialer(kp key.KeyPair, relay []key.PublicKey) tunnel.Dialer {
	if kp.Public.IsZero() {
		kp = w.n.id
	}
	return fakeDialer{n: w.n, kp: kp, relay: relayName(relay)}
}

var errAlreadyListening = errors.New("fake: key pair already listening")

func (w *fakeNetwork) Listen(ctx context.Context, kp key.KeyPair, o stack.ListenOptions) (tunnel.PeerListener, error) {
	allow, relay := o.Allow, o.Relay
	n := w.n
	n.mu.Lock()
	defer n.mu.Unlock()
	n.relays["listen "+kp.Public.String()] = relayName(relay)
	if old, ok := n.lns[kp.Public]; ok && !old.isClosed() {
		return nil, errAlreadyListening
	}
	l := &fakeListener{n: n, kp: kp, allow: allow, ch: make(chan tunnel.PeerConn), closed: make(chan struct{})}
	n.lns[kp.Public] = l
	w.mu.Lock()
	w.lns = append(w.lns, l)
	w.mu.Unlock()
	return l, nil
}

type fakeListener struct {
	n      *fakeNet
	kp     key.KeyPair
	allow  tunnel.AllowList
	ch     chan tunnel.PeerConn
	closed chan struct{}
	once   sync.Once
}

func (l *fakeListener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

func (l *fakeListener) Accept() (tunnel.PeerConn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fakeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *fakeListener) PublicKey() key.PublicKey { return l.kp.Public }

type fakeConn struct {
	*net.TCPConn
	remote key.PublicKey
}

func (c fakeConn) RemotePublicKey() key.PublicKey { return c.remote }

type fakeDialer struct {
	n     *fakeNet
	kp    key.KeyPair
	relay string
}

var (
	errPeerNotFound = errors.New("fake: PEER_NOT_FOUND: no node knows the peer")
	errFirewalled   = errors.New("fake: SERVER_ERROR: server refused the connection")
)

func (d fakeDialer) Dial(ctx context.Context, remote key.PublicKey) (tunnel.PeerConn, error) {
	n := d.n
	if !tunnel.IsLaneDial(ctx) { // a session's second connection is not a session
		n.dials.Add(1)
	}
	n.mu.Lock()
	n.relays["dial "+remote.String()] = d.relay
	n.mu.Unlock()
	n.mu.Lock()
	l, ok := n.lns[remote]
	n.mu.Unlock()
	if !ok || l.isClosed() {
		return nil, errPeerNotFound
	}
	if !l.allow.Allows(d.kp.Public) {
		return nil, errFirewalled
	}
	n.mu.Lock()
	a, err := net.Dial("tcp", n.tcp.Addr().String())
	var b net.Conn
	if err == nil {
		b, err = n.tcp.Accept()
	}
	if err == nil {
		n.pairs = append(n.pairs, a, b)
	}
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case l.ch <- fakeConn{b.(*net.TCPConn), d.kp.Public}:
		return fakeConn{a.(*net.TCPConn), remote}, nil
	case <-l.closed:
	case <-ctx.Done():
	}
	a.Close()
	b.Close()
	return nil, errPeerNotFound
}

// echoServer serves TCP echo on loopback until the test ends.
func echoServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

// roundTrip writes msg on c and reads it back (through an echo service).
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeKey(t testing.TB, dir, name string) (string, key.KeyPair) {
	t.Helper()
	kp, err := key.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := dir + "/" + name
	if err := key.WriteSeedFile(p, kp.Seed()); err != nil {
		t.Fatal(err)
	}
	return p, kp
}
