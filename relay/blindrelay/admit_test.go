package blindrelay

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// One source (an IPv4 address, or any address of an IPv6 /64) gets
// MaxSessionsPerSource sessions; the next is refused at once, while a
// peer from another source is still accepted and relayed, and a session
// closing frees its source's slot.
func TestSessionCapPerSource(t *testing.T) {
	conntest.CheckGoroutines(t)
	srv, relaySock, _ := goRelay(t, ServerOptions{MaxSessionsPerSource: 2})
	hostA := netip.MustParseAddr("198.51.100.7")
	a1, err := connectGoFrom(t, srv, relaySock, hostA)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := connectGoFrom(t, srv, relaySock, hostA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connectGoFrom(t, srv, relaySock, hostA); !errors.Is(err, ErrLimit) {
		t.Fatalf("third session from %v: %v, want ErrLimit", hostA, err)
	}
	if st := srv.Stats(); st.SessionsRefused != 1 || st.Sessions != 2 {
		t.Fatalf("after the refusal: %+v", st)
	}

	// Another source gets service: it is accepted and pairs with a1.
	b, err := connectGoFrom(t, srv, relaySock, netip.MustParseAddr("203.0.113.9"))
	if err != nil {
		t.Fatalf("a session from another source: %v", err)
	}
	ra, rb := pairBoth(t, a1, b, newToken(t))
	exchange(t, ra, rb, 64<<10, 20*time.Second)

	// IPv6 addresses count per /64.
	net6 := []netip.Addr{netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::2"), netip.MustParseAddr("2001:db8:1:2:3:4:5:6")}
	for i, src := range net6 {
		_, err := connectGoFrom(t, srv, relaySock, src)
		if (err == nil) != (i < 2) {
			t.Fatalf("session %d from the /64 of %v: %v", i, src, err)
		}
	}
	if _, err := connectGoFrom(t, srv, relaySock, netip.MustParseAddr("2001:db8:1:3::1")); err != nil {
		t.Fatalf("a session from the next /64: %v", err)
	}

	// Closing a session of hostA lets hostA in again.
	a2.client.Close()
	a2.mux.Close()
	waitFor(t, "the closed session to go", 5*time.Second, func() bool { return srv.Stats().Sessions == 5 })
	if _, err := connectGoFrom(t, srv, relaySock, hostA); err != nil {
		t.Fatalf("a session from %v after one of its sessions closed: %v", hostA, err)
	}
	if st := srv.Stats(); st.SessionsRefused != 2 || st.Matched != 1 {
		t.Fatalf("stats at the end: %+v", st)
	}
}

// MaxSessions caps sessions over all sources.
func TestSessionCapGlobal(t *testing.T) {
	conntest.CheckGoroutines(t)
	var mu sync.Mutex
	var reported []error
	srv, relaySock, _ := goRelay(t, ServerOptions{MaxSessions: 2, OnError: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, err)
	}})
	a, err := connectGoFrom(t, srv, relaySock, netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connectGoFrom(t, srv, relaySock, netip.MustParseAddr("192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	if _, err := connectGoFrom(t, srv, relaySock, netip.MustParseAddr("192.0.2.3")); !errors.Is(err, ErrLimit) {
		t.Fatalf("third session: %v, want ErrLimit", err)
	}
	if st := srv.Stats(); st.SessionsRefused != 1 || st.Sessions != 2 {
		t.Fatalf("after the refusal: %+v", st)
	}
	mu.Lock()
	if len(reported) != 1 || !errors.Is(reported[0], ErrLimit) {
		t.Fatalf("OnError got %v, want one ErrLimit", reported)
	}
	mu.Unlock()
	a.client.Close()
	a.mux.Close()
	waitFor(t, "the closed session to go", 5*time.Second, func() bool { return srv.Stats().Sessions == 1 })
	if _, err := connectGoFrom(t, srv, relaySock, netip.MustParseAddr("192.0.2.3")); err != nil {
		t.Fatalf("a session after one closed: %v", err)
	}
}

// A session that sends no pair request is closed, with its connection,
// FirstMessageTimeout after it opened (within the janitor's quarter-
// timeout tick plus scheduling slack); sessions that paired stay and keep
// relaying well past that.
func TestFirstMessageTimeout(t *testing.T) {
	conntest.CheckGoroutines(t)
	const timeout = 400 * time.Millisecond
	var silentErrs []error
	var mu sync.Mutex
	srv, relaySock, _ := goRelay(t, ServerOptions{FirstMessageTimeout: timeout, OnError: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if errors.Is(err, ErrSilent) {
			silentErrs = append(silentErrs, err)
		}
	}})
	a, b := connectGo(t, srv, relaySock), connectGo(t, srv, relaySock)
	ra, rb := pairBoth(t, a, b, newToken(t))

	start := time.Now()
	silent := connectGo(t, srv, relaySock)
	select {
	case <-silent.mux.Done():
	case <-time.After(timeout + 10*time.Second):
		t.Fatalf("the silent session's connection still open %v after it opened", time.Since(start))
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("the silent session closed after %v, before FirstMessageTimeout %v", d, timeout)
	} else {
		t.Logf("the silent session closed %v after it opened (timeout %v)", d, timeout)
	}
	waitFor(t, "the silent session to leave the stats", 5*time.Second, func() bool { return srv.Stats().Sessions == 2 })

	// The pairing sessions outlive several timeouts and still relay.
	time.Sleep(3 * timeout)
	if st := srv.Stats(); st.Sessions != 2 || st.Silent != 1 || st.Active != 1 {
		t.Fatalf("stats after 3 more timeouts: %+v", st)
	}
	select {
	case <-a.mux.Done():
		t.Fatal("a pairing session's connection was closed")
	case <-b.mux.Done():
		t.Fatal("a pairing session's connection was closed")
	default:
	}
	exchange(t, ra, rb, 64<<10, 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(silentErrs) != 1 {
		t.Fatalf("OnError got %d ErrSilent, want 1: %v", len(silentErrs), silentErrs)
	}
}
