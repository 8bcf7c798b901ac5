package blindrelay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/udx"
)

// goRelay starts a Go Server on a loopback socket whose datagrams pass a
// tap, closed when the test ends.
func goRelay(t testing.TB, opts ServerOptions) (*Server, *udx.Socket, *tap) {
	t.Helper()
	tp := &tap{PacketConn: listenUDP(t)}
	sock := newSocket(t, tp)
	opts.Streams = sock
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, sock, tp
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two Go peers pair through a Go relay and exchange 16 MiB each way over
// a secret-stream on the relayed path; the relay forwards every byte of
// it but never sees the plaintext marker that starts every 4 KiB of data.
func TestRelayGoGo(t *testing.T) {
	conntest.CheckGoroutines(t)
	srv, relaySock, tp := goRelay(t, ServerOptions{})
	a, b := connectGo(t, srv, relaySock), connectGo(t, srv, relaySock)
	ra, rb := pairBoth(t, a, b, newToken(t))
	if st := srv.Stats(); st.Matched != 1 || st.Active != 1 || st.Pending != 0 || st.Sessions != 2 {
		t.Fatalf("stats after pairing: %+v", st)
	}
	ea, eb := secretPair(t, ra, rb, a.kp)
	const n = 16 << 20
	before := tp.bytes.Load()
	d := exchange(t, ea, eb, n, 60*time.Second)
	relayed := tp.bytes.Load() - before
	t.Logf("2×%d MiB through the relay in %v (%.0f MB/s each way); %d bytes reached the relay socket", n>>20, d, float64(n)/d.Seconds()/1e6, relayed)
	if relayed < 2*n {
		t.Fatalf("only %d bytes passed the relay socket; the data took another path", relayed)
	}
	if s := tp.sightings.Load(); s != 0 {
		t.Fatalf("the relay saw the plaintext marker in %d datagrams", s)
	}
	srv.Close()
	if st := srv.Stats(); st.Active != 0 || st.Sessions != 0 {
		t.Fatalf("stats after Close: %+v", st)
	}
	srv.Close() // idempotent
}

// The positive control for the blindness check: plaintext sent over the
// relayed raw streams (no secret-stream) is seen by the tap, so the tap
// does observe relayed traffic.
func TestRelayTapSeesPlaintext(t *testing.T) {
	conntest.CheckGoroutines(t)
	srv, relaySock, tp := goRelay(t, ServerOptions{})
	a, b := connectGo(t, srv, relaySock), connectGo(t, srv, relaySock)
	ra, rb := pairBoth(t, a, b, newToken(t))
	exchange(t, ra, rb, 1<<20, 30*time.Second)
	if tp.sightings.Load() == 0 {
		t.Fatal("the tap never saw the marker in plaintext traffic")
	}
}

// A relay that alters what it forwards cannot pass off its bytes as the
// peer's: the receiving secret-stream fails authentication and reports an
// error, and nothing it delivered differs from what was sent.
func TestRelayCannotForge(t *testing.T) {
	srv, relaySock, tp := goRelay(t, ServerOptions{})
	a, b := connectGo(t, srv, relaySock), connectGo(t, srv, relaySock)
	ra, rb := pairBoth(t, a, b, newToken(t))
	ea, eb := secretPair(t, ra, rb, a.kp)
	// Untouched, the path works.
	first := markedData(t, 4<<10)
	go ea.Write(first)
	eb.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := make([]byte, len(first)); func() error { _, err := io.ReadFull(eb, got); return err }() != nil || !bytes.Equal(got, first) {
		t.Fatal("the relayed secret-stream did not carry data before tampering")
	}

	tp.tamper.Store(true)
	data := markedData(t, 256<<10)
	go ea.Write(data)
	eb.SetReadDeadline(time.Now().Add(30 * time.Second))
	var got []byte
	buf := make([]byte, 32<<10)
	var err error
	for err == nil {
		var n int
		n, err = eb.Read(buf)
		got = append(got, buf[:n]...)
	}
	if tp.tampered.Load() == 0 {
		t.Fatalf("the tap altered no packet; the test proves nothing (read: %v after %d bytes)", err, len(got))
	}
	if !bytes.HasPrefix(data, got) {
		t.Fatalf("the receiver delivered %d bytes that differ from what was sent", len(got))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the receiver saw no error, only a timeout, after %d good bytes", len(got))
	}
	t.Logf("after %d altered packets the receiver stopped with: %v (%d intact bytes delivered first)", tp.tampered.Load(), err, len(got))
}

// Unpair after the match tears both relay streams down; the relayed
// stream of the peer then stops working, and the link is gone.
func TestUnpairAfterMatch(t *testing.T) {
	conntest.CheckGoroutines(t)
	srv, relaySock, _ := goRelay(t, ServerOptions{})
	a, b := connectGo(t, srv, relaySock), connectGo(t, srv, relaySock)
	tok := newToken(t)
	pairBoth(t, a, b, tok)
	if err := a.client.Unpair(tok); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the link to go", 5*time.Second, func() bool { return srv.Stats().Active == 0 })
	if st := srv.Stats(); st.Cancelled != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// Unpair before the match: the waiting Pair fails with
// ErrPairingCancelled and the relay drops the pending pairing.
func TestUnpairBeforeMatch(t *testing.T) {
	conntest.CheckGoroutines(t)
	srv, relaySock, _ := goRelay(t, ServerOptions{})
	a := connectGo(t, srv, relaySock)
	tok := newToken(t)
	errc := make(chan error, 1)
	go func() {
		_, err := a.client.Pair(testCtx(t, 10*time.Second), true, tok, newStream(t, a.sock))
		errc <- err
	}()
	waitFor(t, "the request to reach the relay", 5*time.Second, func() bool { return srv.Stats().Pending == 1 })
	if _, err := a.client.Pair(testCtx(t, time.Second), true, tok, newStream(t, a.sock)); !errors.Is(err, ErrAlreadyPairing) {
		t.Fatalf("second Pair for the token: %v", err)
	}
	if err := a.client.Unpair(tok); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrPairingCancelled) {
		t.Fatalf("Pair: %v", err)
	}
	waitFor(t, "the pending pairing to go", 5*time.Second, func() bool { return srv.Stats().Pending == 0 })
}
