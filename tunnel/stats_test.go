package tunnel

import (
	"io"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// Both ends count the payload of every tunnelled connection, each way,
// open and total connections, and the live peer session; a redial after
// the session dies counts as one.
func TestStatsCountBytesAndConnections(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, &ForwardOptions{BackoffBase: 20 * time.Millisecond, BackoffMax: time.Second})
	const size = 300_000
	for range 3 {
		if err := echoRoundTrip(r.fwdAddr, size); err != nil {
			t.Fatal(err)
		}
	}
	// One connection held open: it shows as open on both ends.
	c := dialTCP(t, r.fwdAddr)
	io.WriteString(c, "hello")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	const sent = 3*size + 5
	waitStats(t, "forward", r.fwd.Stats, func(s Stats) bool {
		return s.BytesSent == sent && s.BytesReceived == sent && s.ConnsOpen == 1 && s.ConnsTotal == 4 && len(s.Peers) == 1
	})
	waitStats(t, "expose", r.exposer.Stats, func(s Stats) bool {
		return s.BytesSent == sent && s.BytesReceived == sent && s.ConnsOpen == 1 && s.ConnsTotal == 4 && len(s.Peers) == 1
	})
	fs, es := r.fwd.Stats(), r.exposer.Stats()
	if fs.Peers[0].Remote != r.server.Public || fs.Peers[0].Mode != "mux" || es.Peers[0].Remote != r.client.Public {
		t.Fatalf("peers: forward %+v, expose %+v", fs.Peers, es.Peers)
	}
	if fs.Redials != 0 || fs.Since.IsZero() || fs.Peers[0].Since.Before(fs.Since) {
		t.Fatalf("forward stats %+v", fs)
	}
	c.Close()
	waitStats(t, "forward", r.fwd.Stats, func(s Stats) bool { return s.ConnsOpen == 0 })
	waitStats(t, "expose", r.exposer.Stats, func(s Stats) bool { return s.ConnsOpen == 0 })

	r.n.killAll()
	waitStats(t, "forward", r.fwd.Stats, func(s Stats) bool { return len(s.Peers) == 0 })
	if err := echoRoundTrip(r.fwdAddr, 1000); err != nil {
		t.Fatal(err)
	}
	waitStats(t, "forward", r.fwd.Stats, func(s Stats) bool {
		return s.Redials == 1 && s.ConnsTotal == 5 && s.BytesSent == sent+1000 && len(s.Peers) == 1
	})
}

func waitStats(t *testing.T, what string, get func() Stats, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := get()
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stats: %+v", what, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
