package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/internal/key"
)

// rig is one exposed target reached through one forward.
type rig struct {
	n        *fakeNet
	server   key.KeyPair
	client   key.KeyPair
	dialer   *fakeDialer
	exposer  *Exposer
	fwd      *Forwarder
	fwdAddr  string
	events   *eventLog
	serverLg *syncBuffer
}

type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) add(e Event) { l.mu.Lock(); l.ev = append(l.ev, e); l.mu.Unlock() }

// all is a copy of every event so far.
func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ev)
}

func (l *eventLog) of(k EventKind) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.ev {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func testLogger(t testing.TB, w io.Writer) *slog.Logger {
	if w == nil {
		w = tWriter{t}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newRig exposes targetAddr and forwards a loopback port to it. A nil
// fopts means no Forwarder.
func newRig(t testing.TB, targetAddr string, eopts ExposeOptions, fopts *ForwardOptions) *rig {
	r := &rig{n: newFakeNet(t), server: genKey(t), client: genKey(t), events: &eventLog{}, serverLg: &syncBuffer{}}
	r.dialer = r.n.dialer(r.client)
	if eopts.Logger == nil {
		eopts.Logger = testLogger(t, r.serverLg)
	}
	r.exposer = NewExposer(r.n.listen(r.server), targetAddr, eopts)
	t.Cleanup(func() { r.exposer.Close() })
	if fopts != nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if fopts.Logger == nil {
			fopts.Logger = testLogger(t, io.Discard)
		}
		fopts.OnEvent = r.events.add
		r.fwd = NewForwarder(r.dialer, r.server.Public, ln, *fopts)
		r.fwdAddr = ln.Addr().String()
		t.Cleanup(func() { r.fwd.Close() })
	}
	return r
}

func dialTCP(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := tryDialTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryDialTCP dials addr with a 30 s deadline on the connection.
func tryDialTCP(addr string) (*net.TCPConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn), nil
}

func TestHTTPThroughForward(t *testing.T) {
	conntest.CheckGoroutines(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	r := newRig(t, srv.Listener.Addr().String(), ExposeOptions{}, &ForwardOptions{})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 5 {
		resp, err := client.Get(fmt.Sprintf("http://%s/x%d", r.fwdAddr, i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("hello /x%d", i); string(body) != want {
			t.Fatalf("body %q, want %q", body, want)
		}
	}
	if d := r.n.dials.Load(); d != 1 {
		t.Fatalf("%d peer connections for 5 requests, want 1", d)
	}
}

// Hundred parallel 1 MiB echoes through one forward share one peer
// connection, and every byte comes back intact.
func TestParallelOneSession(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, &ForwardOptions{})
	const conns, size = 100, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoRoundTrip(r.fwdAddr, size)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if d := r.n.dials.Load(); d != 1 {
		t.Fatalf("%d peer connections, want exactly 1", d)
	}
	if a := tg.accepts.Load(); a != conns {
		t.Fatalf("target saw %d connections, want %d", a, conns)
	}
}

// echoRoundTrip sends size random bytes, half-closes, and checks that the
// echo hashes the same.
func echoRoundTrip(addr string, size int) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, size)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	if err := <-werr; err != nil {
		return err
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), sha(data)) {
		return fmt.Errorf("echo of %d bytes came back as %d bytes with another hash", size, n)
	}
	return nil
}

func sha(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// A raw client (plain bytes on a peer connection, like hypertele) reaches
// an auto-detecting Expose, including one whose first byte is the
// preamble's.
func TestRawClientToExpose(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, nil)
	for _, msg := range []string{"GET / HTTP/1.0\r\n\r\n", "\x00keytunnel/raw-ish bytes", "\x00k", strings.Repeat("z", 100_000)} {
		pc, err := r.dialer.Dial(context.Background(), r.server.Public)
		if err != nil {
			t.Fatal(err)
		}
		pc.SetDeadline(time.Now().Add(10 * time.Second))
		go func() { io.WriteString(pc, msg); pc.CloseWrite() }()
		got, err := io.ReadAll(pc)
		pc.Close()
		if err != nil || string(got) != msg {
			t.Fatalf("raw echo of %.20q: got %.20q (%d bytes), %v", msg, got, len(got), err)
		}
	}
	if e := r.n.dials.Load(); e != 4 {
		t.Fatalf("dials %d", e)
	}
}

// A raw client of a server-speaks-first service gets the banner after the
// detection wait.
func TestRawServerSpeaksFirst(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, func(c *net.TCPConn) {
		io.WriteString(c, "220 smtp.example ESMTP\r\n")
		echo(c)
	})
	const wait = 150 * time.Millisecond
	r := newRig(t, tg.addr(), ExposeOptions{DetectTimeout: wait}, nil)
	pc, err := r.dialer.Dial(context.Background(), r.server.Public)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	br := bufio.NewReader(pc)
	banner, err := br.ReadString('\n')
	if err != nil || banner != "220 smtp.example ESMTP\r\n" {
		t.Fatalf("banner %q, %v", banner, err)
	}
	if el := time.Since(start); el < wait {
		t.Fatalf("banner after %v, before the %v detection wait ended", el, wait)
	}
	io.WriteString(pc, "EHLO me\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "EHLO me\r\n" {
		t.Fatalf("echo %q, %v", line, err)
	}
}

// hyperteleServer pipes each peer connection to a new TCP connection of
// target, unframed, as hypertele-server does.
func hyperteleServer(t testing.TB, ln PeerListener, target string) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			pc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer pc.Close()
				tc, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer tc.Close()
				go func() { io.Copy(tc, pc); tc.(*net.TCPConn).CloseWrite() }()
				io.Copy(pc, tc)
				pc.CloseWrite()
				io.Copy(io.Discard, pc)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

func TestRawForwardToRawServer(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	n := newFakeNet(t)
	srv := genKey(t)
	hyperteleServer(t, n.listen(srv), tg.addr())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder(n.dialer(genKey(t)), srv.Public, ln, ForwardOptions{Raw: true, Logger: testLogger(t, nil)})
	t.Cleanup(func() { f.Close() })
	for range 3 {
		if err := echoRoundTrip(ln.Addr().String(), 100_000); err != nil {
			t.Fatal(err)
		}
	}
	if d := n.dials.Load(); d != 3 {
		t.Fatalf("raw forward made %d peer connections for 3 local ones, want 3", d)
	}
}

// Also: a raw Forward against a keytunnel Expose (auto-detect) works.
func TestRawForwardToExpose(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{DetectTimeout: 100 * time.Millisecond}, &ForwardOptions{Raw: true})
	if err := echoRoundTrip(r.fwdAddr, 200_000); err != nil {
		t.Fatal(err)
	}
}

func TestAllowList(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	friend := genKey(t)
	r := newRig(t, tg.addr(), ExposeOptions{Allow: NewAllowList(friend.Public)}, &ForwardOptions{WaitTimeout: 5 * time.Second})

	// Pipe gets the typed error.
	err := Pipe(context.Background(), r.dialer, r.server.Public, &bytes.Buffer{}, ForwardOptions{Logger: testLogger(t, io.Discard)})
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Pipe from a stranger: %v, want ErrRefused", err)
	}
	if !strings.Contains(err.Error(), "allow list") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	// A forwarded connection is closed without data, and the forwarder
	// reports the refusal. The connection's bytes go out before the reply
	// comes, and on this in-memory network the refusal's reset may beat
	// the connect's own return: a connect that fails is a refusal too.
	if c, err := net.Dial("tcp", r.fwdAddr); err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("hello"))
		if b, err := io.ReadAll(c); len(b) != 0 {
			t.Fatalf("refused forward read %q, %v", b, err)
		}
		c.Close()
	}
	// The event and the connection's close come from different
	// goroutines.
	waitFor(t, "a refused event", func() bool { return len(r.events.of(EventRefused)) > 0 })
	if ev := r.events.of(EventRefused); !errors.Is(ev[0].Err, ErrRefused) {
		t.Fatalf("no refused event: %+v", r.events.all())
	}
	// A raw stranger is dropped too.
	pc, err := r.dialer.Dial(context.Background(), r.server.Public)
	if err != nil {
		t.Fatal(err)
	}
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(pc, "raw hello")
	if b, _ := io.ReadAll(pc); len(b) != 0 {
		t.Fatalf("raw stranger read %q", b)
	}
	pc.Close()

	if a := tg.accepts.Load(); a != 0 {
		t.Fatalf("target saw %d connections from refused peers", a)
	}
	if lg := r.serverLg.String(); strings.Count(lg, "refused peer") < 3 || !strings.Contains(lg, r.client.Public.String()) {
		t.Fatalf("server log lacks the refusals:\n%s", lg)
	}

	// The friend gets through.
	r2 := r.n.dialer(friend)
	var out bytes.Buffer
	err = Pipe(context.Background(), r2, r.server.Public, struct {
		io.Reader
		io.Writer
	}{strings.NewReader("friend"), &out}, ForwardOptions{})
	if err != nil || out.String() != "friend" {
		t.Fatalf("friend: %q, %v", out.String(), err)
	}
}

func TestReconnect(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, &ForwardOptions{BackoffBase: 20 * time.Millisecond, BackoffMax: time.Second, WaitTimeout: 5 * time.Second})
	c1 := dialTCP(t, r.fwdAddr)
	defer c1.Close()
	io.WriteString(c1, "one")
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c1, buf); err != nil || string(buf) != "one" {
		t.Fatalf("first connection: %q %v", buf, err)
	}
	r.n.killAll() // the peer session dies mid-way
	// The local connection is reset, not ended: a reader must not take
	// what it got for the whole stream.
	c1.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c1); err == nil {
		t.Fatal("the connection of a dead session ended cleanly (FIN), as if complete")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the connection of a dead session stayed open")
	} else {
		t.Logf("first connection ended with %v", err)
	}
	// The local port is still open, and the next connection redials.
	for i := range 3 {
		if err := echoRoundTrip(r.fwdAddr, 10_000); err != nil {
			t.Fatalf("after the kill, connection %d: %v", i, err)
		}
	}
	if d := r.n.dials.Load(); d != 2 {
		t.Fatalf("%d dials, want 2 (one redial)", d)
	}
	if len(r.events.of(EventDisconnected)) != 1 || len(r.events.of(EventConnected)) != 2 {
		t.Fatalf("events: %+v", r.events.all())
	}
}

// A failed dial fails the local connection that waited for it at once,
// with the dial's error, instead of holding it for WaitTimeout; a
// connection within the backoff that follows fails without a dial; the
// first connection after the backoff dials at once, and when the peer
// is back it gets through. Backoffs grow with each failure.
func TestRedialOnDemand(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	const base, maxB = 250 * time.Millisecond, time.Second // backoffs long enough for a loaded machine to fit a connection inside
	r := newRig(t, tg.addr(), ExposeOptions{}, &ForwardOptions{BackoffBase: base, BackoffMax: maxB, WaitTimeout: 20 * time.Second})
	const failing = 4
	r.dialer.definitive = true
	r.dialer.fail.Store(failing)
	attempts := func() int64 { return failing - max(r.dialer.fail.Load(), 0) }
	for i := range failing {
		start := time.Now()
		if err := echoRoundTrip(r.fwdAddr, 10); err == nil {
			t.Fatalf("connection %d got through a failing dial", i)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("connection %d failed after %v: it waited instead of failing with the dial", i, el)
		}
		if a := attempts(); a != int64(i+1) {
			t.Fatalf("after connection %d: %d dials, want %d", i, a, i+1)
		}
		ev := r.events.of(EventRedialing)
		if len(ev) != i+1 {
			t.Fatalf("%d redialing events, want %d", len(ev), i+1)
		}
		hi := min(base<<i, maxB)
		if d := ev[i].Delay; d < hi/2 || d > hi {
			t.Fatalf("failure %d: backoff %v, want within [%v, %v]", i+1, d, hi/2, hi)
		}
		// Within the backoff a new connection fails at once, no dial.
		if ev[i].Delay >= 100*time.Millisecond {
			start = time.Now()
			if err := echoRoundTrip(r.fwdAddr, 10); err == nil {
				t.Fatal("a connection within the backoff got through")
			}
			if a := attempts(); a != int64(i+1) {
				t.Fatalf("a connection within the backoff dialed (%d dials)", a)
			}
			if el := time.Since(start); el > time.Second {
				t.Fatalf("a connection within the backoff took %v to fail", el)
			}
		}
		time.Sleep(ev[i].Delay + 10*time.Millisecond)
	}
	// The peer is back (no more failures): the next connection dials at
	// once and gets through.
	start := time.Now()
	if err := echoRoundTrip(r.fwdAddr, 1000); err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d failed dials the peer was reached %v after the backoff", failing, time.Since(start).Round(time.Millisecond))
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("reaching the peer took %v", el)
	}
}

// A dial failure that may be transient (not ErrUnreachable) does not fail
// the connection waiting for it: one more dial follows after the backoff,
// and if that succeeds so does the connection. Two failures in a row make
// the peer unreachable: the waiting connection fails after the second,
// and a connection during the backoff that follows fails without a dial.
func TestRedialTransient(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, &ForwardOptions{BackoffBase: 100 * time.Millisecond, BackoffMax: 2 * time.Second, WaitTimeout: 20 * time.Second})
	r.dialer.fail.Store(1)
	if err := echoRoundTrip(r.fwdAddr, 100); err != nil {
		t.Fatalf("one transient failure failed the connection: %v", err)
	}
	if n := len(r.events.of(EventRedialing)); n != 1 {
		t.Fatalf("%d failed dials, want 1", n)
	}

	r.n.killAll()
	waitFor(t, "the session to be seen lost", func() bool { return len(r.events.of(EventDisconnected)) == 1 })
	time.Sleep(2100 * time.Millisecond) // past any hold after the loss
	r.dialer.fail.Store(3)
	start := time.Now()
	if err := echoRoundTrip(r.fwdAddr, 100); err == nil {
		t.Fatal("a connection got through two failing dials")
	}
	if ev := r.events.of(EventRedialing); len(ev) != 3 || r.dialer.fail.Load() != 1 {
		t.Fatalf("%d failed dials in all (%d left), want 3 (2 for this connection)", len(ev), r.dialer.fail.Load())
	}
	t.Logf("the connection failed after two dials, in %v", time.Since(start).Round(time.Millisecond))
	if err := echoRoundTrip(r.fwdAddr, 100); err == nil {
		t.Fatal("a connection during the backoff got through")
	}
	if n := len(r.events.of(EventRedialing)); n != 3 {
		t.Fatalf("a connection during the backoff dialed (%d failed dials)", n)
	}
}

func TestBackoffSequence(t *testing.T) {
	base, max := 100*time.Millisecond, 3*time.Second
	if backoff(0, base, max) != 0 {
		t.Fatal("first dial must not wait")
	}
	for f := 1; f < 12; f++ {
		d := backoff(f, base, max)
		hi := min(base<<(f-1), max)
		if d < hi/2 || d > hi {
			t.Fatalf("backoff(%d) = %v, want in [%v, %v]", f, d, hi/2, hi)
		}
	}
}

// A client that sends its request and then half-closes still receives the
// whole response, in mux and raw mode.
func TestHalfClose(t *testing.T) {
	conntest.CheckGoroutines(t)
	resp := bytes.Repeat([]byte("response "), 50_000)
	tg := newTarget(t, func(c *net.TCPConn) {
		req, _ := io.ReadAll(c) // until the client's EOF
		fmt.Fprintf(c, "%d:", len(req))
		c.Write(resp)
	})
	for _, raw := range []bool{false, true} {
		t.Run(fmt.Sprint("raw=", raw), func(t *testing.T) {
			r := newRig(t, tg.addr(), ExposeOptions{DetectTimeout: 100 * time.Millisecond}, &ForwardOptions{Raw: raw})
			c := dialTCP(t, r.fwdAddr)
			defer c.Close()
			io.WriteString(c, "request body")
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, append([]byte("12:"), resp...)) {
				t.Fatalf("got %d bytes (%.10q), %v", len(got), got, err)
			}
		})
	}
}

func TestPipe(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, func(c *net.TCPConn) {
		// Upper-case what arrives, then say goodbye after the client's EOF.
		b, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(b))
		io.WriteString(c, " bye")
	})
	r := newRig(t, tg.addr(), ExposeOptions{}, nil)
	for _, raw := range []bool{false, true} {
		stdin := strings.NewReader(strings.Repeat("ssh-2.0 ", 10_000))
		stdout := &closeWriteBuffer{}
		err := Pipe(context.Background(), r.dialer, r.server.Public, struct {
			io.Reader
			io.Writer
			closeWriter
		}{stdin, stdout, stdout}, ForwardOptions{Raw: raw})
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.Repeat("SSH-2.0 ", 10_000) + " bye"; stdout.b.String() != want || !stdout.closed {
			t.Fatalf("raw=%v: stdout %d bytes, closed=%v", raw, stdout.b.Len(), stdout.closed)
		}
	}
}

type closeWriter interface{ CloseWrite() error }

type readDeadliner interface{ SetReadDeadline(time.Time) error }

type closeWriteBuffer struct {
	b      bytes.Buffer
	closed bool
}

func (c *closeWriteBuffer) Write(p []byte) (int, error) { return c.b.Write(p) }
func (c *closeWriteBuffer) CloseWrite() error           { c.closed = true; return nil }

// Cancelling Pipe's context ends it even while the service is silent.
func TestPipeCancel(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	r := newRig(t, tg.addr(), ExposeOptions{}, nil)
	pr, pw := net.Pipe() // stdin that never ends but honours deadlines
	defer pr.Close()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := Pipe(ctx, r.dialer, r.server.Public, struct {
		io.Reader
		io.Writer
		readDeadliner
	}{pr, io.Discard, pr}, ForwardOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pipe: %v", err)
	}
}

func TestEventJSON(t *testing.T) {
	k := genKey(t).Public
	b, err := Event{Kind: EventRedialing, Time: time.Unix(0, 0).UTC(), Remote: k, Attempt: 2, Delay: 1500 * time.Millisecond, Err: errFakeDial}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"redialing","time":"1970-01-01T00:00:00Z","remote":"` + k.String() + `","attempt":2,"delay_ms":1500,"error":"fake dial failure"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestCloseIdempotent(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, &ForwardOptions{})
	c := dialTCP(t, r.fwdAddr) // an open tunnelled connection
	io.WriteString(c, "x")
	io.ReadFull(c, make([]byte, 1))
	r.fwd.Close()
	r.fwd.Close()
	r.exposer.Close()
	r.exposer.Close()
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Fatal("data after Close")
	}
	c.Close()
	if r.fwd.Err() != nil || r.exposer.Err() != nil {
		t.Fatal(r.fwd.Err(), r.exposer.Err())
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
