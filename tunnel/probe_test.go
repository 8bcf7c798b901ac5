package tunnel

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/internal/key"
)

// Check reaches an Exposer, pings over a mux session and samples
// throughput on a probe connection, and the exposed target never sees a
// connection: a diagnosis must not touch the user's service.
func TestCheckProbe(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := Check(ctx, r.dialer, r.server.Public, 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rtts %v up %.1f MB/s down %.1f MB/s", rep.RTTs, rep.Up/1e6, rep.Down/1e6)
	if len(rep.RTTs) != 3 || rep.MedianRTT() <= 0 || !rep.Probed || rep.Up <= 0 || rep.Down <= 0 {
		t.Fatalf("report %+v", rep)
	}
	if n := tg.accepts.Load(); n != 0 {
		t.Fatalf("the target saw %d connections", n)
	}
	if d := r.n.dials.Load(); d != 2 {
		t.Fatalf("%d dials, want 2 (session, probe)", d)
	}
}

// A probe from a key the allow list does not hold is refused as a mux
// client is, with the reason.
func TestCheckRefused(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{Allow: NewAllowList(genKey(t).Public)}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := Check(ctx, r.dialer, r.server.Public, 1, 1<<20); !errors.Is(err, ErrRefused) {
		t.Fatalf("Check: %v, want ErrRefused", err)
	}
	if _, _, err := probe(ctx, r.dialer, r.server.Public, 1<<10); !errors.Is(err, ErrRefused) {
		t.Fatalf("probe: %v, want ErrRefused", err)
	}
}

// failingDials fails the dials whose numbers (from 1) fail holds.
type failingDials struct {
	Dialer
	n    atomic.Int32
	fail map[int32]bool
}

func (f *failingDials) Dial(ctx context.Context, remote key.PublicKey) (PeerConn, error) {
	if f.fail[f.n.Add(1)] {
		return nil, errors.New("blindrelay: pair: context deadline exceeded")
	}
	return f.Dialer.Dial(ctx, remote)
}

// The throughput sample's dial gets a second try; a sample that cannot be
// dialed twice is ErrProbeDial, not a transfer that failed.
func TestCheckProbeDialRetried(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	once := &failingDials{Dialer: r.dialer, fail: map[int32]bool{2: true}}
	if rep, err := Check(ctx, once, r.server.Public, 1, 64<<10); err != nil || !rep.Probed {
		t.Fatalf("the sample's dial failing once: %+v, %v; want a sample", rep, err)
	}
	twice := &failingDials{Dialer: r.dialer, fail: map[int32]bool{2: true, 3: true}}
	rep, err := Check(ctx, twice, r.server.Public, 1, 64<<10)
	if !errors.Is(err, ErrProbeDial) || len(rep.RTTs) != 1 {
		t.Fatalf("the sample's dial failing twice: %+v, %v; want the RTTs and ErrProbeDial", rep, err)
	}
}
