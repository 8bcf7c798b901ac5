package dhtrelay

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/protomux"
)

// serveRaw runs one relay session over an in-memory pipe and returns the
// client's raw end and the session's result.
func serveRaw(t *testing.T, s *Server) (protomux.Framed, <-chan error) {
	t.Helper()
	a, b := protomux.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.ServeFramed(context.Background(), a, "pipe") }()
	t.Cleanup(func() { b.Close() })
	return b, done
}

func waitErr(t *testing.T, done <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("session did not end within %v", d)
		return nil
	}
}

// msgClient is a protocol peer that records every message it receives.
type msgClient struct {
	mux  *protomux.Mux
	ch   *Channel
	msgs chan Message
}

func newMsgClient(t *testing.T, f protomux.Framed) *msgClient {
	t.Helper()
	c := &msgClient{msgs: make(chan Message, 1<<16)}
	mux, ch, err := startMux(f, protomux.Options{}, ChannelOptions{OnMessage: func(m Message) {
		select {
		case c.msgs <- m:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	c.mux, c.ch = mux, ch
	t.Cleanup(func() { c.mux.Close() })
	return c
}

func (c *msgClient) send(t *testing.T, m Message) {
	t.Helper()
	if err := c.ch.Send(m); err != nil {
		t.Fatalf("send %s: %v", m.Type(), err)
	}
}

// expect waits for a message of type typ, skipping pings.
func (c *msgClient) expect(t *testing.T, typ Type, d time.Duration) Message {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case m := <-c.msgs:
			if m.Type() == typ {
				return m
			}
			if m.Type() != TypePing {
				t.Logf("skipping %s %+v", m.Type(), m)
			}
		case <-timeout:
			t.Fatalf("no %s within %v (mux error %v)", typ, d, c.mux.Err())
			return nil
		}
	}
}

func custodialHandshake(kp key.KeyPair) Handshake {
	h := Handshake{Custodial: true, PublicKey: kp.Public}
	copy(h.SecretKey[:], kp.Private)
	return h
}

// TestServerMalformedFrames: undecodable bodies end only that client's
// session, with an error; unknown message types are ignored.
func TestServerMalformedFrames(t *testing.T) {
	tn := testnet(t, 2)
	s := NewServer(peerNode(t, tn), ServerOptions{Logger: testLogger()})
	defer s.Close()
	cases := map[string][]byte{
		"connect cut short":  {1, byte(TypeConnect), 1, 2, 3},
		"data count too big": {1, byte(TypeData), 1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x7f},
		"destroy no alias":   {1, byte(TypeDestroy), 1},
		"handshake no key":   {1, byte(TypeHandshake), 0},
	}
	for name, frame := range cases {
		t.Run(name, func(t *testing.T) {
			f, done := serveRaw(t, s)
			if err := f.WriteMessage(AppendOpenFrame(nil, 1)); err != nil {
				t.Fatal(err)
			}
			// An unknown type first: ignored.
			if err := f.WriteMessage([]byte{1, 99, 1, 2, 3}); err != nil {
				t.Fatal(err)
			}
			if err := f.WriteMessage(frame); err != nil {
				t.Fatal(err)
			}
			err := waitErr(t, done, 10*time.Second)
			if !errors.Is(err, protomux.ErrBadMessage) && !errors.Is(err, protomux.ErrBadFrame) {
				t.Fatalf("session ended with %v, want a decode error", err)
			}
		})
	}
	if n := s.Clients(); n != 0 {
		t.Fatalf("%d clients left", n)
	}
}

// TestServerUnknownAliases: messages naming nothing are ignored and the
// session carries on (a lookup still finishes).
func TestServerUnknownAliases(t *testing.T) {
	tn := testnet(t, 2)
	s := NewServer(peerNode(t, tn), ServerOptions{Logger: testLogger()})
	defer s.Close()
	f, done := serveRaw(t, s)
	c := newMsgClient(t, f)
	// Before the handshake: ignored.
	c.send(t, Lookup{ID: 1})
	c.send(t, custodialHandshake(newKey(t)))
	c.send(t, custodialHandshake(newKey(t))) // a second handshake: ignored
	for _, m := range []Message{
		Data{Alias: 77, Chunks: [][]byte{[]byte("x")}}, End{Alias: 78}, Destroy{Paired: true, Alias: 79},
		Connected{Alias: 5, RemoteAlias: 80}, Close{Alias: 81}, Accept{ID: 82}, Deny{ID: 83},
		Signature{ID: 84, Signature: make([]byte, 64)}, NoiseReply{ID: 85, Payload: []byte{1}},
		Finished{ID: 86}, // a relay's message from a client: ignored
	} {
		c.send(t, m)
	}
	c.send(t, Lookup{ID: 2, Topic: [32]byte{1}})
	if m := c.expect(t, TypeFinished, 30*time.Second).(Finished); m.ID != 2 {
		t.Fatalf("finished %d, want 2", m.ID)
	}
	select {
	case err := <-done:
		t.Fatalf("session ended: %v", err)
	default:
	}
}

// TestServerStreamFlood: thousands of connects from one client are
// bounded by Limits.Streams; the rest get destroy with a limit error, and
// closing the client frees everything.
func TestServerStreamFlood(t *testing.T) {
	tn := testnet(t, 2)
	node := peerNode(t, tn)
	// The DHT goes silent: every dial then waits in its lookup, so the
	// limit is reached however fast this machine fails a lookup that
	// has answers.
	tn.Close()
	s := NewServer(node, ServerOptions{Logger: testLogger(), Limits: Limits{Streams: 32}})
	defer s.Close()
	f, done := serveRaw(t, s)
	c := newMsgClient(t, f)
	kp := newKey(t)
	c.send(t, custodialHandshake(kp))
	g0 := runtime.NumGoroutine()
	const n = 3000
	for i := range n {
		// Keys nobody listens on, each a valid point: every dial runs a
		// DHT query (an invalid key fails before that, too quickly to
		// fill the limit).
		m := Connect{Custodial: true, Alias: uint32(i + 1), PublicKey: kp.Public, RemotePublicKey: newKey(t).Public}
		copy(m.SecretKey[:], kp.Private)
		c.send(t, m)
	}
	// Every connect is answered: a limit refusal at once, or the dial's
	// own failure (no peer has these keys).
	limited, answered := 0, 0
	timeout := time.After(90 * time.Second)
	for answered < n {
		select {
		case m := <-c.msgs:
			if d, ok := m.(Destroy); ok {
				answered++
				if strings.Contains(d.Error, "limit") {
					limited++
				}
			}
		case <-timeout:
			t.Fatalf("%d of %d connects answered (%d limit refusals)", answered, n, limited)
		}
	}
	t.Logf("%d connects: %d refused at the limit, %d dialed and failed", n, limited, n-limited)
	if limited == 0 {
		t.Fatal("no connect was refused at the limit")
	}
	if g := runtime.NumGoroutine(); g > g0+32*8+64 {
		t.Fatalf("%d goroutines for 32 streams (started with %d)", g, g0)
	}
	c.mux.Close()
	waitErr(t, done, 15*time.Second)
	if n := s.Clients(); n != 0 {
		t.Fatalf("%d clients left", n)
	}
}

// TestServerNeverReadingClient: a client that stops reading while a peer
// pushes data holds only bounded buffers, and the heartbeat (no pong)
// ends its session.
func TestServerNeverReadingClient(t *testing.T) {
	tn := testnet(t, 2)
	relayNode, serverNode := peerNode(t, tn), peerNode(t, tn)
	s := NewServer(relayNode, ServerOptions{Logger: testLogger(), PingInterval: 300 * time.Millisecond,
		IdleTimeout: 3 * time.Second, WriteQueue: 1 << 20, StreamBuffer: 1 << 20})
	defer s.Close()

	// A peer that writes as fast as it can.
	skp := newKey(t)
	ctx := testCtx(t, 60*time.Second)
	l, err := serverNode.Listen(ctx, skp, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var pushed atomic.Int64
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Write(buf)
			pushed.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()

	// The client: a real TCP transport whose reads stop after open.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.(*net.TCPConn).SetReadBuffer(16 << 10)
	f, _, err := TCP(ctx, raw, true, TCPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stopReading := make(chan struct{})
	gate := &gatedFramed{Framed: f, gate: stopReading, closed: make(chan struct{})}
	c := newMsgClient(t, gate)
	kp := newKey(t)
	c.send(t, custodialHandshake(kp))
	m := Connect{Custodial: true, Alias: 1, PublicKey: kp.Public, RemotePublicKey: skp.Public}
	copy(m.SecretKey[:], kp.Private)
	c.send(t, m)
	c.expect(t, TypeOpen, 30*time.Second)
	close(stopReading)
	start := time.Now()
	for s.Clients() != 0 {
		if time.Since(start) > 15*time.Second {
			t.Fatal("the relay kept a client that never answers pings")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("session ended %v after the client stopped reading; the peer pushed %d KiB", time.Since(start).Round(100*time.Millisecond), pushed.Load()>>10)
	if p := pushed.Load(); p > 64<<20 {
		t.Fatalf("the peer pushed %d MiB into a client that does not read", p>>20)
	}
}

// gatedFramed stops reading once gate is closed (the TCP window fills)
// until it is closed.
type gatedFramed struct {
	protomux.Framed
	gate   chan struct{}
	once   sync.Once
	closed chan struct{}
}

func (g *gatedFramed) ReadMessage() ([]byte, error) {
	select {
	case <-g.gate:
		<-g.closed
		return nil, net.ErrClosed
	default:
	}
	return g.Framed.ReadMessage()
}

func (g *gatedFramed) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Framed.Close()
}
