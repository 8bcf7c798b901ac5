package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// greedyOrSink is the target of the fairness test: a connection whose
// first byte is 'A' is held and never read; any other is read to its end
// and answered with the byte count.
func greedyOrSink(stop <-chan struct{}, held *atomic.Int64) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		var first [1]byte
		if _, err := io.ReadFull(c, first[:]); err != nil {
			return
		}
		if first[0] == 'A' {
			held.Add(1)
			<-stop
			return
		}
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%d", n+1)
	}
}

// transfer sends size bytes through addr to the sink and returns the rate.
func transfer(t *testing.T, addr string, size int) float64 {
	t.Helper()
	c := dialTCP(t, addr)
	defer c.Close()
	buf := bytes.Repeat([]byte{'B'}, 64<<10)
	start := time.Now()
	for n := 0; n < size; n += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("B's transfer after %d bytes: %v", n, err)
		}
	}
	c.CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != fmt.Sprint(size) {
		t.Fatalf("B's sink got %q of %d bytes (%v)", reply, size, err)
	}
	return float64(size) / time.Since(start).Seconds()
}

// One greedy peer cannot starve another (issue #13): while peer A opens
// 300 connections and pushes 1 MiB into each towards a target that never
// reads, peer B's transfer runs at least at half its rate alone. (1 MiB,
// not cmd/keytunnel's 4 MiB: this test's own sockets would otherwise hold
// over a GiB of kernel memory, which puts the host's TCP stack under
// memory pressure, and that slows every socket, B's too.) A's
// streams over its session's cap are reset and reported, naming A; B is
// never refused.
func TestGreedyPeerDoesNotStarveOthers(t *testing.T) {
	conntest.CheckGoroutines(t)
	size := 24 << 20
	if testing.Short() {
		size = 16 << 20
	}
	stop := make(chan struct{})
	var held atomic.Int64
	tg := newTarget(t, greedyOrSink(stop, &held))
	t.Cleanup(func() { close(stop) })
	var exposeEvents eventLog
	r := newRig(t, tg.addr(), ExposeOptions{OnEvent: exposeEvents.add}, &ForwardOptions{})

	greedy := genKey(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fa := NewForwarder(r.n.dialer(greedy), r.server.Public, ln, ForwardOptions{Logger: testLogger(t, io.Discard)})
	t.Cleanup(func() { fa.Close() })

	best := func(tries int) float64 {
		var b float64
		for range tries {
			b = max(b, transfer(t, r.fwdAddr, size))
		}
		return b
	}
	alone := best(2)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var cut, sentA atomic.Int64
	for range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				cut.Add(1)
				return
			}
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
			defer stop()
			buf := bytes.Repeat([]byte{'A'}, 64<<10)
			for n := 0; n < 1<<20; n += len(buf) {
				m, err := c.Write(buf)
				sentA.Add(int64(m))
				if err != nil {
					if ctx.Err() == nil {
						cut.Add(1)
					}
					return
				}
			}
		}()
	}
	// Let A's connections reach the target and fill what they can: B is
	// measured against the attack's steady state, not against the CPU its
	// first burst costs.
	for deadline, last := time.Now().Add(20*time.Second), int64(-1); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		if n := sentA.Load(); n == last && held.Load() > 0 {
			break
		} else {
			last = n
		}
	}
	loaded := best(3)
	if loaded < alone/2 {
		// Another package's tests on the same two cores can take B's
		// CPU for seconds (CI saw 48 %): three more tries while A is
		// still at it. A design that starved B would fail them too.
		t.Logf("B at %.0f%% of its rate alone while A is greedy; measuring again", 100*loaded/alone)
		loaded = max(loaded, best(3))
	}
	cancel()
	wg.Wait()
	// Measured again once A is gone, and the lower of the two taken: the
	// machine's load from other work changes between the measurements,
	// and the test is about A, not about that.
	alone = min(alone, best(2))

	t.Logf("B alone %.0f MB/s, while A holds %d streams (%d of A's 300 saw their reset): %.0f MB/s (%.0f%%)",
		alone/1e6, held.Load(), cut.Load(), loaded/1e6, 100*loaded/alone)
	if loaded < alone/2 {
		t.Errorf("B ran at %.0f%% of its rate alone while A was greedy, want >= 50%%", 100*loaded/alone)
	}
	if h := held.Load(); h > DefaultStreamsPerSession {
		t.Errorf("A holds %d streams, over the per-session cap %d", h, DefaultStreamsPerSession)
	}
	refused := exposeEvents.of(EventRefused)
	if len(refused) == 0 {
		t.Fatal("no refused event")
	}
	for _, e := range refused {
		if e.Remote != greedy.Public || !errors.Is(e.Err, ErrOverBudget) {
			t.Errorf("refused event for %s (%v), want A %s over budget", e.Remote, e.Err, greedy.Public)
		}
	}
	if !strings.Contains(r.serverLg.String(), "refused stream") || !strings.Contains(r.serverLg.String(), greedy.Public.String()) {
		t.Errorf("no log line naming A's refused stream:\n%s", r.serverLg)
	}
}

// Over the session cap a mux client is refused with the reason, the raw
// one is dropped, and the peer already in keeps its session.
func TestSessionCap(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{Budget: Budget{Sessions: 1}}, &ForwardOptions{})
	c := dialTCP(t, r.fwdAddr) // brings up the first session
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	err := Pipe(context.Background(), r.n.dialer(genKey(t)), r.server.Public, &bytes.Buffer{}, ForwardOptions{Logger: testLogger(t, io.Discard)})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "too many peer sessions") {
		t.Fatalf("second peer: %v, want ErrRefused for too many sessions", err)
	}
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'y' {
		t.Fatalf("first peer's stream after the refusal: %q %v", b, err)
	}
	c.Close()
}

func TestBudgetValidate(t *testing.T) {
	for _, b := range []Budget{{Sessions: -1}, {StreamsPerSession: -1}, {Streams: -2}, {Memory: -1}, {Memory: 1000}} {
		if err := b.Validate(); !errors.Is(err, ErrBadBudget) {
			t.Errorf("%+v: %v, want ErrBadBudget", b, err)
		}
	}
	if err := (Budget{}).Validate(); err != nil {
		t.Error(err)
	}
}

// Window growth is granted within the total budget and a session's
// quarter of it; initial windows always are, and are counted.
func TestAccountantMemory(t *testing.T) {
	a := newAccountant(Budget{Memory: 4 << 20})
	s1, s2 := a.session(), a.session()
	sp1, _ := s1.newSpan()
	if err := sp1.ReserveMemory(initialWindow, 255); err != nil {
		t.Fatal(err)
	}
	if err := sp1.ReserveMemory(768<<10, 128); err != nil {
		t.Fatalf("growth within the session's quarter: %v", err)
	}
	if err := sp1.ReserveMemory(1, 128); err == nil {
		t.Fatal("growth past the session's quarter granted")
	}
	sp2, _ := s2.newSpan()
	if err := sp2.ReserveMemory(initialWindow, 255); err != nil {
		t.Fatal(err)
	}
	if err := sp2.ReserveMemory(512<<10, 128); err != nil {
		t.Fatalf("another session's growth: %v", err)
	}
	if err := a.admitStream(s2); err != nil {
		t.Fatal(err)
	}
	sp1.Done()
	sp2.Done()
	if a.memory != 0 || s1.memory != 0 || s2.memory != 0 {
		t.Fatalf("after Done: %d %d %d reserved", a.memory, s1.memory, s2.memory)
	}
}

// TestClientMemoryCountsInitialWindow: a Forwarder's streams start with
// clientInitialWindow, of which yamux reserves only its own 256 KiB; the
// rest is counted with it, and released with the stream.
func TestClientMemoryCountsInitialWindow(t *testing.T) {
	s := clientMemory()
	mm, err := s.newSpan()
	if err != nil {
		t.Fatal(err)
	}
	if err := mm.ReserveMemory(initialWindow, 255); err != nil {
		t.Fatal(err)
	}
	if s.memory != clientInitialWindow {
		t.Errorf("after the initial reservation: %d bytes counted, want %d", s.memory, clientInitialWindow)
	}
	// Growth is counted as asked, and only the first top-priority
	// reservation carries the extra.
	if err := mm.ReserveMemory(1<<20, 128); err != nil {
		t.Fatal(err)
	}
	if want := int64(clientInitialWindow + 1<<20); s.memory != want {
		t.Errorf("after growth: %d bytes counted, want %d", s.memory, want)
	}
	mm.Done()
	if s.memory != 0 || s.a.memory != 0 {
		t.Errorf("after Done: session %d, accountant %d bytes counted", s.memory, s.a.memory)
	}
}

// Frames a laneConn holds for the other lane cost nothing up to the
// session's window reservation (an honest peer's are data within its
// windows); past it they are charged to the budget, and refused over it.
func TestHeldFramesCharged(t *testing.T) {
	a := newAccountant(Budget{Memory: 4 << 20})
	s := a.session()
	sp, _ := s.newSpan()
	if err := sp.ReserveMemory(initialWindow, 255); err != nil {
		t.Fatal(err)
	}
	if err := s.holdFrames(200 << 10); err != nil || a.memory != initialWindow {
		t.Fatalf("held within the window: %v, %d bytes counted, want %d", err, a.memory, initialWindow)
	}
	if err := s.holdFrames(100 << 10); err != nil || a.memory != 300<<10 {
		t.Fatalf("held past the window: %v, %d bytes counted, want %d", err, a.memory, 300<<10)
	}
	if err := s.holdFrames(a.perSession); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("held past the session's share: %v, want ErrOverBudget", err)
	}
	if err := s.holdFrames(-250 << 10); err != nil || a.memory != initialWindow {
		t.Fatalf("after a release: %v, %d bytes counted, want %d", err, a.memory, initialWindow)
	}
	if err := s.holdFrames(100 << 10); err != nil {
		t.Fatal(err)
	}
	s.releaseHeld()
	sp.Done()
	if a.memory != 0 || s.memory != 0 {
		t.Fatalf("after the session: %d, %d bytes counted", a.memory, s.memory)
	}
}

// A hostile peer that sends a stream's data on the wrong lane without a
// SWITCH fails its laneConn once what it holds is over the session's share
// of the budget, well before maxHeld, and the charge ends with the session.
func TestLaneConnHeldCharged(t *testing.T) {
	conntest.CheckGoroutines(t)
	acct := newAccountant(Budget{Memory: 2 << 20}) // a 512 KiB share
	mem := acct.session()
	l, errc, sent, _ := wrongLanePeer(t, mem.holdFrames, maxHeld)
	select {
	case err := <-errc:
		if !errors.Is(err, errLaneHeld) || !errors.Is(err, ErrOverBudget) {
			t.Fatalf("Read: %v, want %v over the budget", err, errLaneHeld)
		}
		t.Logf("failed with %v after %d bytes", err, sent)
	case <-time.After(10 * time.Second):
		t.Fatal("laneConn did not fail")
	}
	if sent > int(acct.perSession)+64<<10 {
		t.Errorf("the hostile peer wrote %d bytes, over the session's %d", sent, acct.perSession)
	}
	l.Close()
	mem.releaseHeld()
	if acct.memory != 0 {
		t.Errorf("%d bytes still counted after the session", acct.memory)
	}
}
