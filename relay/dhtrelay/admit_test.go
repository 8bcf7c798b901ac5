package dhtrelay

import (
	"context"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/admit"
)

// failingListener fails its first Accepts with EMFILE, as a process out of
// file descriptors does, then accepts from the real listener.
type failingListener struct {
	net.Listener
	fails int
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

func TestAcceptRetriesEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	fl := &failingListener{Listener: ln, fails: 3}
	c, err := acceptRetrying(context.Background(), fl, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("accept after EMFILE: %v", err)
	}
	c.Close()
	ln.Close()
	if _, err := acceptRetrying(context.Background(), fl, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("accept on a closed listener succeeded")
	}
}

func TestPendingCaps(t *testing.T) {
	s := NewServer(nil, ServerOptions{MaxPending: 3, MaxPendingPerSource: 2})
	defer s.Close()
	a, b := admit.Source("192.0.2.1:1"), admit.Source("192.0.2.2:1")
	for i, want := range []bool{true, true, false} {
		if got := s.admitPending(a) == nil; got != want {
			t.Fatalf("source a, connection %d admitted %v, want %v", i, got, want)
		}
	}
	if err := s.admitPending(b); err != nil {
		t.Fatalf("another source: %v", err)
	}
	if err := s.admitPending(b); err == nil {
		t.Fatal("over the global pending cap admitted")
	}
	s.pending.Release(a)
	if err := s.admitPending(b); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}
