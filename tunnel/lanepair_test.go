package tunnel

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// A Forwarder's session gets its interactive lane: one more peer
// connection, joined by the server to that session.
func TestLaneJoined(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, &ForwardOptions{})
	if err := echoRoundTrip(r.fwdAddr, 1<<10); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !laneTaken(r.exposer) {
		if time.Now().After(deadline) {
			t.Fatalf("no lane joined within 10 s (%d lane dials)", r.n.lanes.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.fwd.mu.Lock()
	sess := r.fwd.sess
	r.fwd.mu.Unlock()
	if sess == nil || sess.lanes == nil {
		t.Fatal("the Forwarder's session runs on no laneConn")
	}
	// Both ends cork both lanes (newLaneConn, attach), so that a new
	// stream's SYN and ACK leave with its first bytes: new streams start
	// on lane I.
	var ex *laneConn
	r.exposer.lanes.mu.Lock()
	for _, ls := range r.exposer.lanes.m {
		ex = ls.lc
	}
	r.exposer.lanes.mu.Unlock()
	for side, lc := range map[string]*laneConn{"forward": sess.lanes, "expose": ex} {
		for lane := range laneNames {
			var c net.Conn
			for {
				lc.bmu.Lock()
				c = lc.conns[lane]
				lc.bmu.Unlock()
				if c != nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if _, ok := c.(*corkConn); !ok {
				t.Errorf("%s's %s lane is a %T, want a *corkConn", side, laneNames[lane], c)
			}
		}
	}
	before := sess.lanes.stats()
	if err := echoRoundTrip(r.fwdAddr, 1<<20); err != nil {
		t.Fatal(err)
	}
	after := sess.lanes.stats()
	// The new connection starts on the lane, and its 1 MiB moves to the
	// first connection past bulkAfter.
	if after.FramesSent[laneI] == before.FramesSent[laneI] || after.ToBulk == before.ToBulk {
		t.Fatalf("lane stats before %+v, after %+v: want frames on the interactive lane and a move to bulk", before, after)
	}
	if d, l := r.n.dials.Load(), r.n.lanes.Load(); d != 1 || l != 1 {
		t.Fatalf("%d session and %d lane connections, want 1 and 1", d, l)
	}
}

func laneTaken(e *Exposer) bool {
	e.lanes.mu.Lock()
	defer e.lanes.mu.Unlock()
	for _, ls := range e.lanes.m {
		if ls.taken {
			return true
		}
	}
	return false
}

// A lane joins only the session whose token it brings, from that
// session's own key, and only once.
func TestLaneRefusals(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := r.dialer.Dial(ctx, r.server.Public)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	features, err := handshakeWith(pc, preamble, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	token, ok := feature(features, featureLanes)
	if !ok {
		t.Fatalf("OK reply %q offers no lane", features)
	}
	if _, ok := feature(features, featureProbe); !ok {
		t.Fatalf("OK reply %q no longer lists %s", features, featureProbe)
	}
	tb, err := hex.DecodeString(token)
	if err != nil || len(tb) != laneTokenSize {
		t.Fatalf("lane token %q", token)
	}
	try := func(d *fakeDialer, tok []byte) error {
		t.Helper()
		c, err := d.Dial(context.WithValue(ctx, laneDialKey{}, true), r.server.Public)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = handshakeWith(c, lanePreamble+string(tok), 5*time.Second)
		return err
	}
	other := r.n.dialer(genKey(t))
	if err := try(other, tb); !errors.Is(err, ErrRefused) {
		t.Fatalf("another key's lane with the right token: %v, want ErrRefused", err)
	}
	wrong := append([]byte(nil), tb...)
	wrong[0] ^= 1
	if err := try(r.dialer, wrong); !errors.Is(err, ErrRefused) {
		t.Fatalf("a lane with a wrong token: %v, want ErrRefused", err)
	}
	if err := try(r.dialer, tb); err != nil {
		t.Fatalf("the session's own lane: %v", err)
	}
	if err := try(r.dialer, tb); !errors.Is(err, ErrRefused) {
		t.Fatalf("a second lane with the same token: %v, want ErrRefused", err)
	}
}

func TestFeature(t *testing.T) {
	for _, c := range []struct {
		reason, f, v string
		ok           bool
	}{
		{"probe1", "probe1", "", true},
		{"probe1 lanes1=00ff", "lanes1", "00ff", true},
		{"probe1 lanes1=00ff", "probe1", "", true},
		{"probe10", "probe1", "", false},
		{"", "lanes1", "", false},
		{"lanes10=1", "lanes1", "", false},
	} {
		v, ok := feature(c.reason, c.f)
		if v != c.v || ok != c.ok {
			t.Errorf("feature(%q, %q) = %q, %v; want %q, %v", c.reason, c.f, v, ok, c.v, c.ok)
		}
	}
}

// lateLaneRig exposes an echo target with a 50 ms DetectTimeout, opens
// a mux session to it and returns the session's connection and lane
// token, with the target, the Exposer's events and the dialing context.
func lateLaneRig(t *testing.T) (r *rig, tg *target, events *eventLog, ctx context.Context, pc PeerConn, token []byte) {
	t.Helper()
	tg = newTarget(t, echo)
	events = &eventLog{}
	r = newRig(t, tg.addr(), ExposeOptions{DetectTimeout: 50 * time.Millisecond, OnEvent: events.add}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	pc, err := r.dialer.Dial(ctx, r.server.Public)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	features, err := handshakeWith(pc, preamble, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := feature(features, featureLanes)
	if !ok {
		t.Fatalf("OK reply %q offers no lane", features)
	}
	token, _ = hex.DecodeString(tok)
	return r, tg, events, ctx, pc, token
}

// lateLane dials the session's lane, stays silent for six times
// DetectTimeout, then sends the preamble and token; it returns the target
// connections that caused and the reply's error, and checks that the only
// connected event is the session's.
func lateLane(t *testing.T, r *rig, tg *target, events *eventLog, ctx context.Context, token []byte) (int64, error) {
	t.Helper()
	accepts := tg.accepts.Load()
	lane, err := r.dialer.Dial(context.WithValue(ctx, laneDialKey{}, true), r.server.Public)
	if err != nil {
		t.Fatal(err)
	}
	defer lane.Close()
	time.Sleep(300 * time.Millisecond)
	_, herr := handshakeWith(lane, lanePreamble+string(token), 5*time.Second)
	if c := events.of(EventConnected); len(c) != 1 || c[0].Mode != "mux" {
		t.Errorf("connected events %+v, want the session's alone", c)
	}
	return tg.accepts.Load() - accepts, herr
}

// A lane whose preamble comes after DetectTimeout (its first packet lost
// on a long path) still joins its session, and is not first taken for a
// raw peer: no connected event, no target connection.
func TestLaneLatePreamble(t *testing.T) {
	conntest.CheckGoroutines(t)
	r, tg, events, ctx, _, token := lateLaneRig(t)
	targets, err := lateLane(t, r, tg, events, ctx, token)
	if err != nil {
		t.Fatalf("the late lane: %v", err)
	}
	if !laneTaken(r.exposer) {
		t.Fatal("the late lane was not joined to its session")
	}
	if targets != 0 {
		t.Errorf("the late lane made %d target connections, want 0", targets)
	}
}

// A lane whose session ended before it spoke (the client exited right
// after its one request, its lane's dial under way) is refused, and is
// not first taken for a raw peer. TestE2EAllow saw that connection as a
// raw peer with a target connection of its own.
func TestLaneAfterSessionEnd(t *testing.T) {
	conntest.CheckGoroutines(t)
	r, tg, events, ctx, pc, token := lateLaneRig(t)
	pc.Close()
	for deadline := time.Now().Add(5 * time.Second); len(events.of(EventDisconnected)) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the session did not end")
		}
	}
	targets, err := lateLane(t, r, tg, events, ctx, token)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("a lane after its session: %v, want ErrRefused", err)
	}
	if targets != 0 {
		t.Errorf("the lane made %d target connections, want 0", targets)
	}
}
