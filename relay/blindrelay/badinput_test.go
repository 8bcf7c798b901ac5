package blindrelay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/internal/protomux"
)

// errLog collects what a Server reports through OnError.
type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errLog) add(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }

func (l *errLog) count(target error) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.errs {
		if errors.Is(e, target) {
			n++
		}
	}
	return n
}

// rawPeer is a hand-driven blind-relay channel over an in-memory pipe to
// a Server session: it sends arbitrary bodies and records replies.
type rawPeer struct {
	mux     *protomux.Mux
	ch      *protomux.Channel
	pair    *protomux.Message[[]byte]
	unpair  *protomux.Message[[]byte]
	mu      sync.Mutex
	replies [][]byte
}

func newRawPeer(t testing.TB, srv *Server, id byte) *rawPeer {
	t.Helper()
	a, b := chanPipe()
	smux, err := StartMux(b, protomux.Options{}, func(m *protomux.Mux) error {
		_, err := srv.Accept(m, AcceptOptions{ID: []byte{id}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { smux.Close() })
	p := &rawPeer{}
	// StartMux here too: the relay's OPEN must find this channel.
	p.mux, err = StartMux(a, protomux.Options{}, func(m *protomux.Mux) error {
		p.ch = m.NewChannel(protomux.ChannelOptions{Protocol: Protocol, ID: []byte{id}})
		p.pair = protomux.AddMessage(p.ch, protomux.Raw{}, func(_ *protomux.Channel, b []byte) {
			p.mu.Lock()
			p.replies = append(p.replies, b)
			p.mu.Unlock()
		})
		p.unpair = protomux.AddMessage[[]byte](p.ch, protomux.Raw{}, nil)
		return p.ch.Open(nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.mux.Close() })
	return p
}

func (p *rawPeer) sendPair(t testing.TB, v Pair) {
	t.Helper()
	if err := p.pair.Send(AppendPair(nil, v)); err != nil {
		t.Fatal(err)
	}
}

func (p *rawPeer) nreplies() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.replies) }

// A flood of pair requests with fresh tokens from many sessions: the
// server keeps at most MaxPendingPerSession per session and MaxPending in
// all, refuses (and reports) the rest, and its memory stays flat.
func TestFloodBounded(t *testing.T) {
	conntest.CheckGoroutines(t)
	// Count reports without keeping them: the test's own memory would
	// otherwise dominate the heap measurement.
	var limits atomic.Int64
	srv, err := NewServer(ServerOptions{Streams: loopbackSocket(t), MaxPending: 256, MaxPendingPerSession: 32, OnError: func(err error) {
		if errors.Is(err, ErrLimit) {
			limits.Add(1)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	const sessions, each = 20, 5000
	peers := make([]*rawPeer, sessions)
	for i := range peers {
		peers[i] = newRawPeer(t, srv, byte(i))
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapAlloc
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tok Token
			for j := range each {
				tok[0], tok[1], tok[2], tok[3] = byte(i), byte(j), byte(j>>8), byte(j>>16)
				if err := p.pair.Send(AppendPair(nil, Pair{IsInitiator: j%2 == 0, Token: tok, ID: uint64(j)})); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "the flood to be processed", 60*time.Second, func() bool {
		st := srv.Stats()
		return st.Requested+st.Refused == sessions*each
	})
	st := srv.Stats()
	if st.Pending > 256 || st.Requested > 256 || st.Refused != sessions*each-st.Requested {
		t.Fatalf("stats after the flood: %+v", st)
	}
	if n := limits.Load(); uint64(n) != st.Refused {
		t.Fatalf("%d ErrLimit reports for %d refusals", n, st.Refused)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("%d pair requests: %+v; heap %d → %d bytes", sessions*each, st, heap0, ms.HeapAlloc)
	if ms.HeapAlloc > heap0+4<<20 {
		t.Fatalf("heap grew from %d to %d bytes", heap0, ms.HeapAlloc)
	}
	// Closing the sessions frees their slots.
	for _, p := range peers {
		p.ch.Close()
	}
	waitFor(t, "the sessions and their slots to go", 10*time.Second, func() bool {
		st := srv.Stats()
		return st.Pending == 0 && st.Sessions == 0
	})
	if st := srv.Stats(); st.Cancelled != 256 {
		t.Fatalf("stats after closing the sessions: %+v", st)
	}
}

// Matched pairs are bounded too: beyond MaxActive the completing request
// is refused and nothing is allocated.
func TestMaxActive(t *testing.T) {
	conntest.CheckGoroutines(t)
	var log errLog
	srv, err := NewServer(ServerOptions{Streams: loopbackSocket(t), MaxActive: 3, OnError: log.add})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	a, b := newRawPeer(t, srv, 1), newRawPeer(t, srv, 2)
	for i := range 5 {
		tok := fill32(byte(i))
		a.sendPair(t, Pair{IsInitiator: true, Token: tok, ID: uint64(100 + i)})
		b.sendPair(t, Pair{Token: tok, ID: uint64(200 + i)})
	}
	waitFor(t, "three matches", 5*time.Second, func() bool { return a.nreplies() == 3 && b.nreplies() == 3 })
	st := srv.Stats()
	if st.Active != 3 || st.Matched != 3 || st.Refused != 2 || st.Pending != 2 {
		t.Fatalf("stats: %+v", st)
	}
	for _, r := range a.replies {
		p, err := DecodePair(r)
		if err != nil || !p.IsInitiator || !ValidStreamID(p.ID) {
			t.Fatalf("reply %x: %+v %v", r, p, err)
		}
	}
	if log.count(ErrLimit) != 2 {
		t.Fatalf("reports: %v", log.errs)
	}
}

// Bad input on the wire: an id beyond 32 bits is refused; a second
// request for a taken slot is ignored; unpair of an unknown token is
// reported; a malformed body destroys that connection (as in the
// reference) without touching other sessions; nothing panics.
func TestBadInput(t *testing.T) {
	conntest.CheckGoroutines(t)
	var log errLog
	srv, err := NewServer(ServerOptions{Streams: loopbackSocket(t), OnError: log.add})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	a, b := newRawPeer(t, srv, 1), newRawPeer(t, srv, 2)
	a.sendPair(t, Pair{IsInitiator: true, Token: fill32(1), ID: 1 << 32})
	a.sendPair(t, Pair{IsInitiator: true, Token: fill32(2), ID: 7})
	a.sendPair(t, Pair{IsInitiator: true, Token: fill32(2), ID: 8}) // taken slot
	if err := a.unpair.Send(AppendUnpair(nil, Unpair{Token: fill32(9)})); err != nil {
		t.Fatal(err)
	}
	// b may not cancel a's pending pairing.
	if err := b.unpair.Send(AppendUnpair(nil, Unpair{Token: fill32(2)})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the requests", 5*time.Second, func() bool { return log.count(ErrUnknownToken) == 2 })
	st := srv.Stats()
	if st.Refused != 1 || st.Ignored != 1 || st.Pending != 1 || st.Requested != 1 || log.count(ErrInvalidStreamID) != 1 {
		t.Fatalf("stats %+v, reports %v", st, log.errs)
	}
	for _, body := range [][]byte{nil, {1}, {0xff, 0}, {0xfd}} {
		p := newRawPeer(t, srv, 3)
		if err := p.pair.Send(body); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.mux.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("malformed pair %x did not end the connection", body)
		}
		if err := p.mux.Err(); !errors.Is(err, protomux.ErrTransportClosed) {
			t.Fatalf("peer mux: %v", err)
		}
	}
	waitFor(t, "the malformed sessions to go", 5*time.Second, func() bool { return srv.Stats().Sessions == 2 })
	// a's pending pairing survived; b completes it.
	b.sendPair(t, Pair{Token: fill32(2), ID: 9})
	waitFor(t, "the match", 5*time.Second, func() bool { return a.nreplies() == 1 && b.nreplies() == 1 })
}

// A pairing whose other half never comes expires; the waiting Pair ends
// with its context, and the unpair it sends on the way out is harmless.
func TestPendingExpiry(t *testing.T) {
	conntest.CheckGoroutines(t)
	var log errLog
	srv, relaySock, _ := goRelay(t, ServerOptions{PendingTimeout: 100 * time.Millisecond, OnError: log.add})
	a := connectGo(t, srv, relaySock)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := a.client.Pair(ctx, true, newToken(t), newStream(t, a.sock))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pair: %v", err)
	}
	if st := srv.Stats(); st.Expired != 1 || st.Pending != 0 || log.count(ErrExpired) != 1 {
		t.Fatalf("stats %+v, reports %v", st, log.errs)
	}
}

// Relay streams that nobody uses (peers paired and never connected, or
// vanished) are torn down after IdleTimeout; a pair in use is not. The
// test awaits conditions, not durations: two idle pairs made one after
// the other are each torn down, so the pair in use has outlived at least
// two idle checks, while its keepalives (every 50 ms, a twelfth of
// IdleTimeout) kept it in use.
func TestIdleTimeout(t *testing.T) {
	conntest.CheckGoroutines(t)
	var log errLog
	srv, relaySock, _ := goRelay(t, ServerOptions{IdleTimeout: 600 * time.Millisecond, OnError: log.add})
	a, b := connectGo(t, srv, relaySock), connectGo(t, srv, relaySock)
	ra, rb := pairBoth(t, a, b, newToken(t))
	ctx := testCtx(t, 30*time.Second)
	for round := 1; round <= 2; round++ {
		// Paired, never connected.
		tok := newToken(t)
		errc := make(chan error, 1)
		go func() {
			_, err := b.client.Pair(ctx, false, tok, newStream(t, b.sock))
			errc <- err
		}()
		if _, err := a.client.Pair(ctx, true, tok, newStream(t, a.sock)); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("idle pair %d to go", round), 10*time.Second, func() bool {
			st := srv.Stats()
			if st.Idle > uint64(round) || st.Matched != uint64(round)+1 {
				t.Fatalf("round %d: stats %+v: the pair in use was torn down as idle", round, st)
			}
			return st.Idle == uint64(round) && st.Active == 1 && log.count(ErrIdle) == round
		})
	}
	// The used pair still works.
	exchange(t, ra, rb, 64<<10, 10*time.Second)
	if st := srv.Stats(); st.Active != 1 || st.Idle != 2 || log.count(ErrIdle) != 2 {
		t.Fatalf("stats %+v, reports %v", st, log.errs)
	}
}

// Client-side errors: duplicate channel, replies that match no request
// or carry an impossible id, the channel closing under a pending Pair,
// and use after Close.
func TestClientErrors(t *testing.T) {
	conntest.CheckGoroutines(t)
	a, b := protomux.Pipe()
	var relayCh *protomux.Channel
	var reply *protomux.Message[Pair]
	requests := make(chan Pair, 16)
	rmux, err := StartMux(b, protomux.Options{}, func(m *protomux.Mux) error {
		relayCh = m.NewChannel(protomux.ChannelOptions{Protocol: Protocol, ID: []byte("k")})
		reply = protomux.AddMessage(relayCh, pairCodec{}, func(_ *protomux.Channel, p Pair) { requests <- p })
		protomux.AddMessage(relayCh, unpairCodec{}, nil)
		return relayCh.Open(nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rmux.Close()
	var c *Client
	cmux, err := StartMux(a, protomux.Options{}, func(m *protomux.Mux) error {
		c, err = NewClient(m, []byte("k"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cmux.Close()
	if _, err := NewClient(cmux, []byte("k")); !errors.Is(err, ErrDuplicateChannel) {
		t.Fatalf("second client on the mux: %v", err)
	}
	if err := c.WaitOpen(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)

	// A reply with the wrong role is ignored; one with a 33-bit id fails
	// the request.
	type res struct {
		id  uint32
		err error
	}
	resc := make(chan res, 1)
	go func() { id, err := c.Pair(ctx, true, fill32(1), stubStream(5)); resc <- res{id, err} }()
	req := <-requests
	if !req.IsInitiator || req.ID != 5 || req.Token != fill32(1) {
		t.Fatalf("request %+v", req)
	}
	reply.Send(Pair{IsInitiator: false, Token: fill32(1), ID: 1})
	reply.Send(Pair{IsInitiator: true, Token: fill32(7), ID: 1})
	reply.Send(Pair{IsInitiator: true, Token: fill32(1), ID: 1 << 33})
	if r := <-resc; !errors.Is(r.err, ErrInvalidStreamID) {
		t.Fatalf("Pair: %v", r.err)
	}
	// A good reply.
	go func() { id, err := c.Pair(ctx, false, fill32(2), stubStream(6)); resc <- res{id, err} }()
	<-requests
	reply.Send(Pair{Token: fill32(2), ID: 0xfffffffe})
	if r := <-resc; r.err != nil || r.id != 0xfffffffe {
		t.Fatalf("Pair: %d %v", r.id, r.err)
	}
	// The relay closes the channel under a pending Pair.
	go func() { id, err := c.Pair(ctx, false, fill32(3), stubStream(7)); resc <- res{id, err} }()
	<-requests
	relayCh.Close()
	if r := <-resc; !errors.Is(r.err, ErrChannelClosed) {
		t.Fatalf("Pair after the channel closed: %v", r.err)
	}
	if _, err := c.Pair(ctx, false, fill32(4), stubStream(8)); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("Pair on a closed channel: %v", err)
	}
	c.Close()
	c.Close()
	if err := c.Unpair(fill32(4)); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("Unpair after close: %v", err)
	}
}

type stubStream uint32

func (s stubStream) ID() uint32 { return uint32(s) }

// Server.Close with sessions, pending pairings and active pairs releases
// everything; Accept afterwards fails.
func TestServerClose(t *testing.T) {
	conntest.CheckGoroutines(t)
	srv, err := NewServer(ServerOptions{Streams: loopbackSocket(t)})
	if err != nil {
		t.Fatal(err)
	}
	a, b := newRawPeer(t, srv, 1), newRawPeer(t, srv, 2)
	a.sendPair(t, Pair{IsInitiator: true, Token: fill32(1), ID: 1})
	b.sendPair(t, Pair{Token: fill32(1), ID: 2})
	a.sendPair(t, Pair{IsInitiator: true, Token: fill32(2), ID: 3})
	waitFor(t, "a match and a pending pairing", 5*time.Second, func() bool {
		st := srv.Stats()
		return st.Active == 1 && st.Pending == 1
	})
	srv.Close()
	srv.Close()
	if st := srv.Stats(); st.Active != 0 || st.Pending != 0 || st.Sessions != 0 {
		t.Fatalf("stats after Close: %+v", st)
	}
	select {
	case <-a.ch.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's channel stayed open")
	}
	if _, err := srv.Accept(a.mux, AcceptOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := NewServer(ServerOptions{}); err == nil {
		t.Fatal("NewServer without Streams")
	}
}

// chanPipe is an in-memory Framed pair with a bounded queue, which (unlike
// protomux.Pipe's unbounded one) keeps nothing once a message is read, so
// heap measurements see only what the Mux and Server hold.
func chanPipe() (protomux.Framed, protomux.Framed) {
	ab, ba := make(chan []byte, 256), make(chan []byte, 256)
	done := make(chan struct{})
	var once sync.Once
	closeFn := func() { once.Do(func() { close(done) }) }
	return &chanEnd{in: ba, out: ab, done: done, close: closeFn}, &chanEnd{in: ab, out: ba, done: done, close: closeFn}
}

type chanEnd struct {
	in, out chan []byte
	done    chan struct{}
	close   func()
}

func (e *chanEnd) ReadMessage() ([]byte, error) {
	select {
	case m := <-e.in:
		return m, nil
	case <-e.done:
		return nil, io.EOF
	}
}

func (e *chanEnd) WriteMessage(b []byte) error {
	select {
	case e.out <- append([]byte(nil), b...):
		return nil
	case <-e.done:
		return io.EOF
	}
}

func (e *chanEnd) Close() error { e.close(); return nil }
