package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// serveEcho accepts from l and echoes each connection, recording the
// peer keys it saw.
func serveEcho(t *testing.T, l *Listener) (keys func() []string, wait func()) {
	var mu sync.Mutex
	var seen []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.AcceptPeer()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("accept: %v", err)
				}
				return
			}
			mu.Lock()
			seen = append(seen, c.RemotePublicKey().String())
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				c.CloseWrite()
			}()
		}
	}()
	return func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }, wg.Wait
}

func roundTrip(t *testing.T, c net.Conn, size int) {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	msg := make([]byte, size)
	rand.Read(msg)
	go func() {
		c.Write(msg)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes: got %d, %v", size, len(got), err)
	}
}

// A Client's streams and a Forwarder's connections both reach a Listener,
// over one session per peer; each accepted conn names its peer.
func TestListenerClientAndForwarder(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := genKey(t), genKey(t)
	l := Listen(n.listen(server), ExposeOptions{Logger: testLogger(t, io.Discard)})
	keys, wait := serveEcho(t, l)
	if l.Addr().String() != server.Public.String() || l.Addr().Network() != "keytunnel" {
		t.Fatalf("Addr %v", l.Addr())
	}

	c := NewClient(n.dialer(client), ForwardOptions{Logger: testLogger(t, io.Discard)})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pc, err := c.Open(context.Background(), server.Public)
			if err != nil {
				t.Error(err)
				return
			}
			defer pc.Close()
			if pc.RemotePublicKey() != server.Public {
				t.Errorf("remote %v", pc.RemotePublicKey())
			}
			roundTrip(t, pc, 1<<20)
		}()
	}
	wg.Wait()
	if d := n.dials.Load(); d != 1 {
		t.Fatalf("4 concurrent Opens made %d dials, want 1 shared session", d)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fwd := NewForwarder(n.dialer(client), server.Public, ln, ForwardOptions{Logger: testLogger(t, io.Discard)})
	tc := dialTCP(t, ln.Addr().String())
	roundTrip(t, tc, 100_000)
	tc.Close()
	fwd.Close()

	// A lost session is dialed again by the next Open. An Open racing the
	// loss may still get a stream on the dying session (yamux opens without
	// a round trip), so wait until the Client's session has seen it.
	c.mu.Lock()
	lost := c.sess[clientKey{remote: server.Public}].sess
	c.mu.Unlock()
	n.killAll()
	select {
	case <-lost.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the Client's session did not see its connection close")
	}
	pc, err := c.Open(context.Background(), server.Public)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, pc, 1000)
	pc.Close()
	c.Close()
	if _, err := c.Open(context.Background(), server.Public); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close: %v", err)
	}

	l.Close()
	wait()
	for _, k := range keys() {
		if k != client.Public.String() {
			t.Fatalf("accepted conn names %s, want %s", k, client.Public)
		}
	}
	if len(keys()) != 6 {
		t.Fatalf("accepted %d conns, want 6", len(keys()))
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// Raw peers (hypertele clients, Client in raw mode) reach a Listener too,
// their first bytes intact; a refused key never reaches Accept.
func TestListenerRawAndAllow(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client, stranger := genKey(t), genKey(t), genKey(t)
	l := Listen(n.listen(server), ExposeOptions{Allow: NewAllowList(client.Public), Logger: testLogger(t, io.Discard)})
	keys, wait := serveEcho(t, l)

	raw := NewClient(n.dialer(client), ForwardOptions{Raw: true})
	for _, size := range []int{1, 15, 100_000} {
		pc, err := raw.Open(context.Background(), server.Public)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, pc, size)
		pc.Close()
	}
	raw.Close()

	bad := NewClient(n.dialer(stranger), ForwardOptions{Logger: testLogger(t, io.Discard)})
	if _, err := bad.Open(context.Background(), server.Public); !errors.Is(err, ErrRefused) {
		t.Fatalf("stranger: %v, want ErrRefused", err)
	}
	bad.Close()
	l.Close()
	wait()
	if len(keys()) != 3 {
		t.Fatalf("accepted %d conns, want the 3 raw ones", len(keys()))
	}
}
