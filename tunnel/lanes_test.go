package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/libp2p/go-yamux/v5"
)

func laneMuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = 10 * time.Second
	c.MaxMessageSize = 16 << 10
	return c
}

// laneSessions runs a yamux client on a and a server on b, both serving
// echo on the streams they accept: a stream echoes what it reads and then
// ends its write side. Gated sessions run over a send gate (gate.go), as
// the tunnel's do, and so do the streams opener opens and the echoes. (An
// echo waiting at its gate stops reading; while a gated writer waiting
// for window kept its admission, echoes both ways could deadlock: see
// gatewin.go.)
type laneSessions struct {
	client, server *yamux.Session
	gates          [2]*sendGate // client's, server's; nil if ungated
	wg             sync.WaitGroup
}

func newLaneSessions(t *testing.T, a, b net.Conn, gated bool) *laneSessions {
	t.Helper()
	s := &laneSessions{}
	sess := [2]*yamux.Session{}
	for i, c := range []net.Conn{a, b} {
		var err error
		switch {
		case gated:
			sess[i], s.gates[i], err = newGatedMux(c, i == 1, laneMuxConfig(), nil)
		case i == 0:
			sess[i], err = yamux.Client(c, laneMuxConfig(), nil)
		default:
			sess[i], err = yamux.Server(c, laneMuxConfig(), nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	s.client, s.server = sess[0], sess[1]
	for i, ss := range sess {
		g := s.gates[i]
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				ys, err := ss.AcceptStream()
				if err != nil {
					return
				}
				st := ys
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					defer st.Close()
					var w io.Writer = st
					if g != nil {
						w = g.stream(st)
					}
					if _, err := io.Copy(w, st); err == nil {
						st.CloseWrite()
						io.Copy(io.Discard, st)
					}
				}()
			}
		}()
	}
	t.Cleanup(func() {
		s.client.Close()
		s.server.Close()
		a.Close()
		b.Close()
		s.wg.Wait()
	})
	return s
}

// opener opens streams on the client's session (or the server's).
func (s *laneSessions) opener(client bool) func() (net.Conn, error) {
	sess, g := s.server, s.gates[1]
	if client {
		sess, g = s.client, s.gates[0]
	}
	return func() (net.Conn, error) {
		st, err := sess.OpenStream(context.Background())
		if err != nil {
			return nil, err
		}
		return g.stream(st), nil
	}
}

// echoRounds sends rounds of pseudo-random data of the given sizes over a
// stream served by echo, pausing between them, and checks that exactly
// the same bytes come back.
func echoRounds(st net.Conn, seed uint64, sizes []int, pause func(int) time.Duration) error {
	st.SetDeadline(time.Now().Add(30 * time.Second))
	sent := sha256.New()
	errc := make(chan error, 1)
	total := 0
	for _, n := range sizes {
		total += n
	}
	go func() {
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		for i, n := range sizes {
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			sent.Write(b)
			if _, err := st.Write(b); err != nil {
				errc <- fmt.Errorf("write round %d: %w", i, err)
				return
			}
			if d := pause(i); d > 0 {
				time.Sleep(d)
			}
		}
		errc <- st.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got := sha256.New()
	n, rerr := io.Copy(got, st)
	werr := <-errc
	switch {
	case werr != nil:
		return werr
	case rerr != nil:
		return fmt.Errorf("read after %d of %d bytes: %w", n, total, rerr)
	case n != int64(total):
		return fmt.Errorf("echoed %d bytes, sent %d", n, total)
	case !bytes.Equal(got.Sum(nil), sent.Sum(nil)):
		return errors.New("echoed bytes differ from those sent")
	}
	return nil
}

func noPause(int) time.Duration { return 0 }

// runEchoStreams opens n streams and runs echoRounds on each.
func runEchoStreams(t *testing.T, open func() (net.Conn, error), n int, seed uint64, sizes func(*rand.Rand) []int, pause func(*rand.Rand) func(int) time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		sz, p := sizes(rng), pause(rng)
		st, err := open()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			if err := echoRounds(st, seed*1000+uint64(i), sz, p); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func fixedSizes(sizes ...int) func(*rand.Rand) []int {
	return func(*rand.Rand) []int { return sizes }
}

func TestLaneConnBeforeAttach(t *testing.T) {
	for _, plain := range []bool{true, false} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			conntest.CheckGoroutines(t)
			p1, p2 := net.Pipe()
			var a, b net.Conn = p1, p2
			var la, lb *laneConn
			if !plain {
				la, lb = newLaneConn(p1), newLaneConn(p2)
				a, b = la, lb
			}
			s := newLaneSessions(t, a, b, false)
			runEchoStreams(t, s.opener(true), 8, 1, fixedSizes(1, 100, 70<<10, 300<<10), func(*rand.Rand) func(int) time.Duration { return noPause })
			runEchoStreams(t, s.opener(false), 4, 2, fixedSizes(5000, 200<<10), func(*rand.Rand) func(int) time.Duration { return noPause })
			if plain {
				return
			}
			for _, l := range []*laneConn{la, lb} {
				st := l.stats()
				if st.FramesSent[laneI] != 0 || st.FramesRecvd[laneI] != 0 || st.ToBulk+st.ToInteractive+st.SwitchesRecvd != 0 {
					t.Errorf("unattached laneConn used lane I: %+v", st)
				}
				if st.FramesSent[laneB] == 0 || st.FramesRecvd[laneB] == 0 {
					t.Errorf("no frames counted: %+v", st)
				}
			}
			// Streams that ended both ways leave no state behind.
			waitFor(t, "stream state dropped", func() bool {
				return la.stats().Streams == 0 && lb.stats().Streams == 0
			})
		})
	}
}

func TestLaneConnAttachMidSession(t *testing.T) {
	for _, x := range []struct{ clientFirst, gated bool }{{true, false}, {false, false}, {true, true}} {
		clientFirst, gated := x.clientFirst, x.gated
		t.Run(fmt.Sprintf("clientFirst=%v/gated=%v", clientFirst, gated), func(t *testing.T) {
			conntest.CheckGoroutines(t)
			p1, p2 := net.Pipe()
			i1, i2 := net.Pipe()
			la, lb := newLaneConn(p1), newLaneConn(p2)
			la.setIdleBack(5 * time.Millisecond)
			lb.setIdleBack(5 * time.Millisecond)
			s := newLaneSessions(t, la, lb, gated)

			sizes := func(rng *rand.Rand) []int {
				sz := make([]int, 12)
				for i := range sz {
					sz[i] = 1 + rng.IntN(100<<10)
				}
				return sz
			}
			pause := func(rng *rand.Rand) func(int) time.Duration {
				return func(int) time.Duration { return time.Duration(rng.IntN(15)) * time.Millisecond }
			}
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { // streams opened before attach, running across it
				defer wg.Done()
				runEchoStreams(t, s.opener(true), 6, 3, sizes, pause)
			}()
			go func() {
				defer wg.Done()
				runEchoStreams(t, s.opener(false), 3, 4, sizes, pause)
			}()
			time.Sleep(40 * time.Millisecond)
			first, second := la, lb
			c1, c2 := i1, i2
			if !clientFirst {
				first, second, c1, c2 = lb, la, i2, i1
			}
			if err := first.attach(c1); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			if err := second.attach(c2); err != nil {
				t.Fatal(err)
			}
			if err := first.attach(c1); !errors.Is(err, errLaneAttached) {
				t.Errorf("second attach: %v", err)
			}
			// Streams opened after attach.
			runEchoStreams(t, s.opener(true), 4, 5, sizes, pause)
			runEchoStreams(t, s.opener(false), 4, 6, sizes, pause)
			wg.Wait()
			for _, l := range []*laneConn{la, lb} {
				if st := l.stats(); st.FramesRecvd[laneI] == 0 || st.FramesSent[laneI] == 0 {
					t.Errorf("lane I unused after attach: %+v", st)
				}
			}
		})
	}
}

func TestLaneConnManyStreamsSwitch(t *testing.T) {
	for _, gated := range []bool{false, true} {
		t.Run(fmt.Sprintf("gated=%v", gated), func(t *testing.T) { testLaneManyStreams(t, gated) })
	}
}

func testLaneManyStreams(t *testing.T, gated bool) {
	conntest.CheckGoroutines(t)
	p1, p2 := net.Pipe()
	i1, i2 := conntest.TCPPair(t)
	la, lb := newLaneConn(p1), newLaneConn(p2)
	for _, l := range []*laneConn{la, lb} {
		l.setIdleBack(3 * time.Millisecond)
	}
	if err := la.attach(i1); err != nil {
		t.Fatal(err)
	}
	if err := lb.attach(i2); err != nil {
		t.Fatal(err)
	}
	s := newLaneSessions(t, la, lb, gated)
	sizes := func(rng *rand.Rand) []int {
		sz := make([]int, 8)
		for i := range sz {
			if rng.IntN(5) < 2 {
				sz[i] = 65<<10 + rng.IntN(150<<10)
			} else {
				sz[i] = 1 + rng.IntN(3000)
			}
		}
		return sz
	}
	pause := func(rng *rand.Rand) func(int) time.Duration {
		return func(int) time.Duration { return time.Duration(rng.IntN(25)) * time.Millisecond }
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); runEchoStreams(t, s.opener(true), 10, 7, sizes, pause) }()
	go func() { defer wg.Done(); runEchoStreams(t, s.opener(false), 10, 8, sizes, pause) }()
	wg.Wait()
	sa, sb := la.stats(), lb.stats()
	t.Logf("client %+v", sa)
	t.Logf("server %+v", sb)
	// Each side moves streams both ways, and between them at least 20
	// times. Idle runs decide how many (a stream moves back after 3 ms
	// without data), so the count swings with the machine's load: each
	// side made 13-53 moves each way here, but one side of a CI run on a
	// busy machine made 3 and 2 while the other made 12 and 12.
	for _, st := range []laneStats{sa, sb} {
		if st.ToBulk < 1 || st.ToInteractive < 1 {
			t.Errorf("a side moved no stream one of the ways: %+v", st)
		}
	}
	if moves := sa.ToBulk + sa.ToInteractive + sb.ToBulk + sb.ToInteractive; moves < 20 || sa.SwitchesRecvd+sb.SwitchesRecvd < 20 {
		t.Errorf("too few lane moves to have tested them (%d): %+v, %+v", moves, sa, sb)
	}
	waitFor(t, "stream state dropped", func() bool {
		return la.stats().Streams == 0 && lb.stats().Streams == 0
	})
	if sa.Held != 0 || sb.Held != 0 {
		t.Errorf("frames still held: %d, %d", sa.Held, sb.Held)
	}
}

// stallConn's Read (or Write) waits until release is closed (or the conn
// is), as if a lost packet held up everything behind it in the receiver
// (or the sender's window were full).
type stallConn struct {
	net.Conn
	writes  bool // stall Write, not Read
	release chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func newStallConn(c net.Conn, writes bool) *stallConn {
	return &stallConn{Conn: c, writes: writes, release: make(chan struct{}), closed: make(chan struct{})}
}

func (c *stallConn) wait() error {
	select {
	case <-c.release:
		return nil
	case <-c.closed:
		return net.ErrClosed
	}
}

func (c *stallConn) Read(p []byte) (int, error) {
	if !c.writes {
		if err := c.wait(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func (c *stallConn) Write(p []byte) (int, error) {
	if c.writes {
		if err := c.wait(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// TestLaneConnHeadOfLine stalls lane B, in the receiver or in the sender,
// while a bulk stream sends: a new small stream's echo still completes,
// over lane I. (In the sender it completes only while the bulk stream's
// window, here yamux's 256 KiB, fits in lane B's queue: beyond, yamux's
// send loop waits for room on lane B with everything behind it.)
func TestLaneConnHeadOfLine(t *testing.T) {
	for _, writes := range []bool{false, true} {
		t.Run(fmt.Sprintf("stallWrites=%v", writes), func(t *testing.T) { testLaneHeadOfLine(t, writes) })
	}
}

func testLaneHeadOfLine(t *testing.T, stallWrites bool) {
	conntest.CheckGoroutines(t)
	p1, p2 := conntest.TCPPair(t)
	i1, i2 := conntest.TCPPair(t)
	var la, lb *laneConn
	var stall *stallConn
	if stallWrites {
		stall = newStallConn(p1, true)
		la, lb = newLaneConn(stall), newLaneConn(p2)
	} else {
		stall = newStallConn(p2, false)
		la, lb = newLaneConn(p1), newLaneConn(stall)
	}
	if err := la.attach(i1); err != nil {
		t.Fatal(err)
	}
	if err := lb.attach(i2); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			close(stall.release)
		}
	}
	defer release()
	cs, err := yamux.Client(la, laneMuxConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := yamux.Server(lb, laneMuxConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() {
		release()
		cs.Close()
		ss.Close()
		wg.Wait()
	}()
	const total = 2 << 20
	var bulkGot atomic.Int64
	bulkDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := ss.AcceptStream()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				var kind [1]byte
				if _, err := io.ReadFull(st, kind[:]); err != nil {
					return
				}
				if kind[0] == 'E' {
					io.Copy(st, st)
					return
				}
				buf := make([]byte, 32<<10)
				for {
					n, err := st.Read(buf)
					if n > 0 && bulkGot.Add(int64(n)) == total {
						close(bulkDone)
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()

	bulk, err := cs.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		bulk.Write([]byte{'B'})
		bulk.Write(make([]byte, total))
		bulk.Close()
	}()
	waitFor(t, "the bulk stream to move to lane B", func() bool { return la.stats().ToBulk > 0 })
	time.Sleep(50 * time.Millisecond) // let lane B fill
	stuck := bulkGot.Load()

	small, err := cs.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	small.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := small.Write([]byte("Eping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(small, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo beside a stalled lane B: %q, %v", got, err)
	}
	t.Logf("echo in %v with %d of %d bulk bytes through", time.Since(start), stuck, total)
	if n := bulkGot.Load(); n != stuck || n >= total {
		t.Fatalf("bulk bytes moved while lane B was stalled (%d, then %d of %d): the test tested nothing", stuck, n, total)
	}
	release()
	select {
	case <-bulkDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("bulk stream stuck after release: %d of %d", bulkGot.Load(), total)
	}
}

// rawFrame is a yamux frame header and body.
func rawFrame(typ byte, flags uint16, id uint32, body []byte, length uint32) []byte {
	f := append(muxFrame(typ, flags, id, length), body...)
	if typ == muxTypeData {
		binary.BigEndian.PutUint32(f[8:], uint32(len(body)))
	}
	return f
}

func drainLane(l *laneConn) chan error {
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := l.Read(buf); err != nil {
				errc <- err
				return
			}
		}
	}()
	return errc
}

// wrongLanePeer is a hostile peer of a new laneConn (charge, if not nil,
// is its held charge): it starts stream 3 on lane B, then sends the
// stream's data on lane I without a SWITCH until it has sent limit bytes or
// a write fails. It returns the laneConn, its reader's error channel
// (drainLane), the bytes sent and the last write's error; the pipes close
// with the test.
func wrongLanePeer(t *testing.T, charge func(int64) error, limit int) (l *laneConn, errc <-chan error, sent int, werr error) {
	t.Helper()
	p1, p2 := net.Pipe()
	i1, i2 := net.Pipe()
	t.Cleanup(func() { i2.Close(); p2.Close() })
	l = newLaneConn(p1)
	if charge != nil {
		l.setHeldCharge(charge)
	}
	if err := l.attach(i1); err != nil {
		t.Fatal(err)
	}
	errc = drainLane(l)
	if _, err := p2.Write(rawFrame(muxTypeWindowUpdate, muxFlagSYN, 3, nil, 0)); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 16<<10)
	for sent < limit && werr == nil {
		_, werr = i2.Write(rawFrame(muxTypeData, 0, 3, body, 0))
		sent += len(body)
	}
	return l, errc, sent, werr
}

func TestLaneConnHeldBound(t *testing.T) {
	conntest.CheckGoroutines(t)
	l, errc, sent, werr := wrongLanePeer(t, nil, 2*maxHeld)
	defer l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, errLaneHeld) {
			t.Fatalf("Read: %v, want %v", err, errLaneHeld)
		}
		t.Logf("failed with %v after %d bytes", err, sent)
	case <-time.After(10 * time.Second):
		t.Fatal("laneConn did not fail")
	}
	if werr == nil {
		t.Error("the hostile peer could write twice maxHeld")
	}
	if st := l.stats(); st.Held > maxHeld {
		t.Errorf("held %d bytes", st.Held)
	}
	if _, err := l.Write(rawFrame(muxTypeData, 0, 2, []byte("x"), 0)); !errors.Is(err, errLaneHeld) {
		t.Errorf("Write after failure: %v", err)
	}
}

func TestLaneConnBadFrame(t *testing.T) {
	conntest.CheckGoroutines(t)
	for _, f := range [][]byte{
		{1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},                 // yamux version 1
		{0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},                 // type 4
		{'K', 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0},               // SWITCH with a flag
		{'K', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},               // SWITCH of stream 0
		{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff},     // 4 GiB data frame
		{'X', 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x0}, // unknown version
	} {
		p1, p2 := net.Pipe()
		l := newLaneConn(p1)
		errc := drainLane(l)
		go p2.Write(f)
		if err := <-errc; !errors.Is(err, errLaneProtocol) {
			t.Errorf("% x: Read: %v", f, err)
		}
		l.Close()
		p2.Close()
	}
}

// TestLaneConnWriteDeadline: a Write waiting for room on a lane that
// takes nothing returns at its deadline, and the lane, which took nothing
// by then either, fails the laneConn as a stalled connection would.
func TestLaneConnWriteDeadline(t *testing.T) {
	conntest.CheckGoroutines(t)
	p1, p2 := net.Pipe() // nobody reads p2
	defer p2.Close()
	l := newLaneConn(p1)
	defer l.Close()
	big := rawFrame(muxTypeData, muxFlagSYN, 1, make([]byte, 900<<10), 0)
	l.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := l.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == len(big) {
		t.Fatalf("Write past its deadline: %d, %v", n, err)
	}
	waitFor(t, "the stalled lane to fail", func() bool {
		l.bmu.Lock()
		defer l.bmu.Unlock()
		return l.err != nil
	})
	if _, err := l.Write(big[n:]); !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "bulk lane") {
		t.Errorf("Write on the failed laneConn: %v", err)
	}
}

func TestLaneConnClose(t *testing.T) {
	conntest.CheckGoroutines(t)
	p1, p2 := net.Pipe() // nobody reads p2 or i2: the lanes stall
	defer p2.Close()
	i1, i2 := net.Pipe()
	defer i2.Close()
	l := newLaneConn(p1)
	if err := l.attach(i1); err != nil {
		t.Fatal(err)
	}
	readErr := drainLane(l)
	big := rawFrame(muxTypeData, muxFlagSYN, 1, make([]byte, 900<<10), 0)
	writeErr := make(chan error, 1)
	go func() {
		_, err := l.Write(big)
		writeErr <- err
	}()
	waitFor(t, "lane I to fill", func() bool {
		l.bmu.Lock()
		defer l.bmu.Unlock()
		return l.out[laneI].len() == laneBufMax
	})
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > closeFlush+time.Second {
		t.Errorf("Close took %v", d)
	}
	for what, c := range map[string]chan error{"Read": readErr, "Write": writeErr} {
		select {
		case err := <-c:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("pending %s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("pending %s not unblocked by Close", what)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := l.Write(big); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	c1, c2 := net.Pipe()
	defer c2.Close()
	defer c1.Close()
	if err := l.attach(c1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("attach after Close: %v", err)
	}
}

// TestLaneConnCloseFlushes: what yamux wrote before Close (its go away)
// still reaches the peer.
func TestLaneConnCloseFlushes(t *testing.T) {
	conntest.CheckGoroutines(t)
	p1, p2 := net.Pipe()
	i1, i2 := net.Pipe()
	la, lb := newLaneConn(p1), newLaneConn(p2)
	defer lb.Close()
	for _, x := range []struct {
		l *laneConn
		c net.Conn
	}{{la, i1}, {lb, i2}} {
		if err := x.l.attach(x.c); err != nil {
			t.Fatal(err)
		}
	}
	ga := muxFrame(muxTypeGoAway, 0, 0, 1)
	if _, err := la.Write(ga); err != nil {
		t.Fatal(err)
	}
	la.Close()
	got := make([]byte, muxHeaderSize)
	lb.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(lb, got); err != nil || !bytes.Equal(got, ga) {
		t.Fatalf("got % x, %v", got, err)
	}
}

// encodeLanes routes frames as a sender's Write does, attaching before
// frame attachAt, and returns what each lane carries.
func encodeLanes(frames [][]byte, attachAt int, idle time.Duration, gaps []time.Duration) [2][]byte {
	r := newLaneRouter()
	r.idleBack = idle
	for id := uint32(2); id <= 100; id += 2 { // the streams ourSyns opened
		r.recv(laneB, muxFrame(muxTypeWindowUpdate, muxFlagSYN, id, 0), nil)
	}
	now := time.Unix(0, 0)
	size := 0
	for _, f := range frames {
		size += len(f) + muxHeaderSize
	}
	lanes := [2][]byte{make([]byte, 0, size), make([]byte, 0, size)}
	for i, f := range frames {
		if i == attachAt {
			r.attached = true
		}
		if i < len(gaps) {
			now = now.Add(gaps[i])
		}
		lane, sw := r.send(parseLaneHeader(f), now)
		if sw >= 0 {
			lanes[sw] = append(lanes[sw], switchFrame(binary.BigEndian.Uint32(f[4:8]))...)
		}
		lanes[lane] = append(lanes[lane], f...)
	}
	return lanes
}

// laneScript is a remote's frames for a few streams: opened, bulk and
// small data with pauses, window updates, ends.
func laneScript(rng *rand.Rand) ([][]byte, []time.Duration) {
	var frames [][]byte
	var acked []uint32
	var gaps []time.Duration
	add := func(f []byte, gap time.Duration) {
		frames = append(frames, f)
		gaps = append(gaps, gap)
	}
	var open []uint32
	next := uint32(1)
	for range 200 {
		gap := time.Duration(rng.IntN(3)) * time.Millisecond
		if len(open) < 3 || rng.IntN(20) == 0 {
			if rng.IntN(3) == 0 {
				// A stream the receiver opened (even IDs; see ourSyns):
				// this side's first frame is its ACK.
				id := 2 * uint32(1+rng.IntN(50))
				if !slices.Contains(open, id) && !slices.Contains(acked, id) {
					acked = append(acked, id)
					add(rawFrame(muxTypeWindowUpdate, muxFlagACK, id, nil, 0), gap)
					open = append(open, id)
					continue
				}
			}
			add(rawFrame(muxTypeWindowUpdate, muxFlagSYN, next, nil, 0), gap)
			open = append(open, next)
			next += 2
			continue
		}
		k := rng.IntN(len(open))
		id := open[k]
		switch x := rng.IntN(30); {
		case x == 0:
			add(rawFrame(muxTypeWindowUpdate, muxFlagRST, id, nil, 0), gap)
			open = append(open[:k], open[k+1:]...)
		case x < 6:
			add(rawFrame(muxTypeWindowUpdate, 0, id, nil, uint32(rng.IntN(1<<20))), gap)
		case x < 8:
			add(rawFrame(muxTypeData, 0, id, make([]byte, rng.IntN(100)), 0), 5*time.Millisecond)
		default:
			add(rawFrame(muxTypeData, 0, id, make([]byte, 16<<10), 0), gap)
		}
	}
	return frames, gaps
}

// ourSyns is a receiver that opened streams 2, 4, ... 100, before
// attaching.
func ourSyns() laneRouter {
	r := newLaneRouter()
	for id := uint32(2); id <= 100; id += 2 {
		r.send(parseLaneHeader(muxFrame(muxTypeWindowUpdate, muxFlagSYN, id, 0)), time.Unix(0, 0))
	}
	return r
}

// TestLaneRouterOrder feeds what the sender routes into a receiver in
// random interleavings of the two lanes: every stream's frames come out
// in the order they were sent, and nothing else does.
func TestLaneRouterOrder(t *testing.T) {
	var switches uint64
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 1))
		frames, gaps := laneScript(rng)
		lanes := encodeLanes(frames, rng.IntN(len(frames)), 4*time.Millisecond, gaps)
		var parsed [2][][]byte
		for i := range lanes {
			r := bytes.NewReader(lanes[i])
			for r.Len() > 0 {
				f, err := readLaneFrame(r)
				if err != nil {
					t.Fatal(err)
				}
				parsed[i] = append(parsed[i], f)
			}
		}
		rx := ourSyns()
		var out [][]byte
		for len(parsed[0])+len(parsed[1]) > 0 {
			lane := rng.IntN(2)
			if len(parsed[lane]) == 0 {
				lane ^= 1
			}
			var err error
			if out, err = rx.recv(lane, parsed[lane][0], out); err != nil {
				t.Fatal(err)
			}
			parsed[lane] = parsed[lane][1:]
		}
		// What a stream sent after its RST may be dropped; all else must
		// come through in order.
		want := map[uint32][][]byte{}
		ended := map[uint32]bool{}
		for _, f := range frames {
			id := binary.BigEndian.Uint32(f[4:8])
			if !ended[id] {
				want[id] = append(want[id], f)
			}
			ended[id] = ended[id] || binary.BigEndian.Uint16(f[2:4])&muxFlagRST != 0
		}
		got := map[uint32][][]byte{}
		for _, f := range out {
			if f[0] != 0 {
				t.Fatalf("seed %d: delivered a SWITCH", seed)
			}
			id := binary.BigEndian.Uint32(f[4:8])
			got[id] = append(got[id], f)
		}
		for id, w := range want {
			g := got[id]
			if ended[id] {
				// A reset may overtake what came before it, which then
				// comes after it for yamux to ignore.
				k := slices.IndexFunc(g, func(f []byte) bool { return bytes.Equal(f, w[len(w)-1]) })
				if k < 0 {
					t.Fatalf("seed %d: stream %d: reset not delivered", seed, id)
				}
				w, g = w[:k], g[:k]
			}
			if len(g) < len(w) {
				t.Fatalf("seed %d: stream %d: %d of %d frames delivered", seed, id, len(g), len(w))
			}
			for i := range w {
				if !bytes.Equal(g[i], w[i]) {
					t.Fatalf("seed %d: stream %d: frame %d out of order: got % x, want % x", seed, id, i, g[i][:12], w[i][:12])
				}
			}
		}
		if rx.held != 0 {
			t.Fatalf("seed %d: %d bytes still held", seed, rx.held)
		}
		switches += rx.stats.SwitchesRecvd
	}
	if switches < 100 {
		t.Errorf("only %d SWITCHes in all", switches)
	}
}

// headersOnly drops the data frames' bodies from a lane's bytes.
func headersOnly(lane []byte) []byte {
	var hs []byte
	r := bytes.NewReader(lane)
	for {
		f, err := readLaneFrame(r)
		if err != nil {
			return hs
		}
		hs = append(hs, f[:muxHeaderSize]...)
	}
}

// FuzzLaneRecv drives the receive path with two lanes' frames, given as
// headers only (data bodies are zeros, so that inputs stay small), in an order the input picks; some frames are taken
// as sent by us instead, to move the send side's state too. No input may
// panic, deliver a SWITCH to yamux, or hold more than maxHeld.
func FuzzLaneRecv(f *testing.F) {
	for seed := range uint64(8) {
		rng := rand.New(rand.NewPCG(seed, 2))
		frames, gaps := laneScript(rng)
		lanes := encodeLanes(frames, int(seed)*20, 4*time.Millisecond, gaps)
		order := make([]byte, 64)
		for i := range order {
			order[i] = byte(rng.Uint32())
		}
		f.Add(headersOnly(lanes[laneB]), headersOnly(lanes[laneI]), order)
	}
	f.Fuzz(fuzzLaneRecv)
}

func fuzzLaneRecv(t *testing.T, b, i, order []byte) {
	// The frame parser, on the raw bytes.
	r := bytes.NewReader(b)
	for {
		if _, err := readLaneFrame(r); err != nil {
			break
		}
	}
	var parsed [2][][]byte
	for lane, hs := range [2][]byte{b, i} {
		for ; len(hs) >= muxHeaderSize; hs = hs[muxHeaderSize:] {
			h := parseLaneHeader(hs)
			if h.check() != nil {
				break
			}
			// Bodies are cut at 4 KiB, or every execution would
			// allocate megabytes; only the held bytes count them.
			fr := make([]byte, muxHeaderSize+min(h.bodyLen(), 4<<10))
			copy(fr, hs[:muxHeaderSize])
			parsed[lane] = append(parsed[lane], fr)
		}
	}
	rx := ourSyns()
	now := time.Unix(0, 0)
	var out [][]byte
	for k := 0; len(parsed[0])+len(parsed[1]) > 0; k++ {
		var o byte
		if len(order) > 0 {
			o = order[k%len(order)] >> (k / len(order) % 4 * 2)
		}
		lane := int(o & 1)
		if len(parsed[lane]) == 0 {
			lane ^= 1
		}
		fr := parsed[lane][0]
		parsed[lane] = parsed[lane][1:]
		if o&2 != 0 && fr[0] == 0 {
			// As if we had sent it: the send side's state changes too.
			rx.attached = o&4 != 0
			now = now.Add(time.Duration(o>>3) * time.Millisecond)
			rx.send(parseLaneHeader(fr), now)
			continue
		}
		var err error
		out, err = rx.recv(lane, fr, out[:0])
		for _, d := range out {
			if d[0] != 0 {
				t.Fatal("delivered a SWITCH")
			}
		}
		if rx.held < 0 || rx.held > maxHeld {
			t.Fatalf("held %d", rx.held)
		}
		if err != nil {
			return
		}
	}
}

func TestByteQueue(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	var q byteQueue
	var want []byte
	next := byte(0)
	for range 10000 {
		if rng.IntN(2) == 0 {
			p := make([]byte, rng.IntN(300))
			for i := range p {
				p[i] = next
				next++
			}
			q.push(p)
			want = append(want, p...)
		} else {
			k := rng.IntN(400)
			got := q.pop(nil, k)
			if len(got) != min(k, len(want)) || !bytes.Equal(got, want[:len(got)]) {
				t.Fatalf("popped % x, want % x", got, want[:len(got)])
			}
			want = want[len(got):]
		}
		if q.len() != len(want) {
			t.Fatalf("len %d, want %d", q.len(), len(want))
		}
	}
}

// TestLaneRouterRules walks the receiver through the cases of its rules,
// one frame at a time, as a remote that opens odd streams sends them.
func TestLaneRouterRules(t *testing.T) {
	wu := func(flags uint16, id uint32) []byte { return muxFrame(muxTypeWindowUpdate, flags, id, 0) }
	data := func(id uint32, s string) []byte { return rawFrame(muxTypeData, 0, id, []byte(s), 0) }
	sw := switchFrame
	ping := muxFrame(2, muxFlagSYN, 0, 7)
	type step struct {
		lane int
		f    []byte
		want [][]byte // delivered by this frame, in order
	}
	r := ourSyns() // we opened 2, 4, ... before attaching
	for i, s := range []step{
		{laneI, ping, [][]byte{ping}}, // session frames: at once
		// Remote stream 1: SYN on B, then it moves to I.
		{laneB, wu(muxFlagSYN, 1), [][]byte{wu(muxFlagSYN, 1)}},
		{laneI, data(1, "b"), nil}, // overtook the SWITCH on B: held
		{laneB, data(1, "a"), [][]byte{data(1, "a")}},
		{laneB, sw(1), [][]byte{data(1, "b")}},
		{laneI, data(1, "c"), [][]byte{data(1, "c")}},
		// Remote stream 5 after it attached: its frame on B overtook its
		// SYN on I; 3, opened before, had its SYN on B.
		{laneI, wu(muxFlagSYN, 7), [][]byte{wu(muxFlagSYN, 7)}},
		{laneB, data(5, "x"), nil},
		{laneI, data(3, "y"), nil},
		{laneB, wu(muxFlagSYN, 3), [][]byte{wu(muxFlagSYN, 3)}},
		{laneI, wu(muxFlagSYN, 5), [][]byte{wu(muxFlagSYN, 5)}},
		{laneI, sw(5), [][]byte{data(5, "x")}},
		{laneB, sw(3), [][]byte{data(3, "y")}},
		// Our stream 2: the remote's data overtook its ACK.
		{laneB, data(2, "d"), nil},
		{laneI, wu(muxFlagACK, 2), [][]byte{wu(muxFlagACK, 2)}},
		// A reset overtakes what is held and ends the stream; what comes
		// later is delivered for yamux to ignore, and a SWITCH dropped.
		{laneI, wu(muxFlagRST, 2), [][]byte{wu(muxFlagRST, 2)}},
		{laneI, sw(2), nil},
		{laneB, data(2, "d"), [][]byte{data(2, "d")}},
		// Switching back and forth with frames held on both lanes.
		{laneB, data(1, "f"), nil},
		{laneB, sw(1), nil},
		{laneI, data(1, "e"), [][]byte{data(1, "e")}},
		{laneI, sw(1), [][]byte{data(1, "f")}},
		{laneI, data(1, "h"), [][]byte{data(1, "h")}},
		{laneB, data(1, "j"), nil},
		{laneI, sw(1), [][]byte{data(1, "j")}},
	} {
		out, err := r.recv(s.lane, s.f, nil)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if len(out) != len(s.want) {
			t.Fatalf("step %d: delivered %d frames, want %d", i, len(out), len(s.want))
		}
		for k := range out {
			if !bytes.Equal(out[k], s.want[k]) {
				t.Fatalf("step %d: frame %d is % x, want % x", i, k, out[k], s.want[k])
			}
		}
	}
	if r.held != 0 {
		t.Errorf("%d bytes still held", r.held)
	}
}

// TestLaneRouterSend walks the sender's policy with a clock of its own.
func TestLaneRouterSend(t *testing.T) {
	r := newLaneRouter()
	now := time.Unix(0, 0)
	hdr := func(typ byte, flags uint16, id, length uint32) laneHeader {
		return parseLaneHeader(muxFrame(typ, flags, id, length))
	}
	type step struct {
		after    time.Duration
		h        laneHeader
		lane, sw int
	}
	const frame = 16 << 10
	for i, s := range []step{
		{0, hdr(muxTypeWindowUpdate, muxFlagSYN, 1, 0), laneB, -1}, // before attach: all on B
		{0, hdr(muxTypeData, 0, 1, frame), laneB, -1},
		{0, hdr(2, muxFlagSYN, 0, 1), laneB, -1},
		{-1, hdr(2, muxFlagSYN, 0, 1), laneI, -1},                       // attached: session frames on I
		{0, hdr(muxTypeWindowUpdate, muxFlagSYN, 3, 0), laneI, -1},      // and first frames
		{0, hdr(muxTypeData, 0, 1, 10), laneI, laneB},                   // 1 is under bulkAfter: moves to I
		{0, hdr(muxTypeData, 0, 3, 4*frame), laneI, -1},                 // 64 KiB: not more than bulkAfter yet
		{0, hdr(muxTypeData, 0, 3, 1), laneI, -1},                       // now it is
		{0, hdr(muxTypeWindowUpdate, 0, 3, 100), laneB, laneI},          // and a window update moves it
		{0, hdr(muxTypeData, 0, 3, frame), laneB, -1},                   // data follows
		{time.Second - 1, hdr(muxTypeWindowUpdate, 0, 3, 1), laneB, -1}, // not quiet yet
		{1, hdr(muxTypeWindowUpdate, 0, 3, 1), laneI, laneB},            // quiet for idleBack: back
		{0, hdr(muxTypeWindowUpdate, muxFlagFIN, 3, 0), laneI, -1},
		{0, hdr(muxTypeWindowUpdate, muxFlagRST, 1, 0), laneI, -1},
	} {
		if s.after < 0 {
			r.attached = true
		} else {
			now = now.Add(s.after)
		}
		lane, sw := r.send(s.h, now)
		if lane != s.lane || sw != s.sw {
			t.Fatalf("step %d: lane %d, SWITCH on %d; want %d, %d", i, lane, sw, s.lane, s.sw)
		}
	}
	if _, ok := r.streams[1]; ok {
		t.Error("stream 1 kept after its reset")
	}
	// 3 ended our way only; its end the other way drops it.
	if _, err := r.recv(laneI, muxFrame(muxTypeWindowUpdate, muxFlagACK|muxFlagFIN, 3, 0), nil); err != nil {
		t.Fatal(err)
	}
	if len(r.streams) != 0 {
		t.Errorf("%d streams kept", len(r.streams))
	}
	if r.stats.ToBulk != 1 || r.stats.ToInteractive != 2 {
		t.Errorf("moves: %+v", r.stats)
	}
}

func TestLaneConnReadDeadline(t *testing.T) {
	conntest.CheckGoroutines(t)
	p1, p2 := net.Pipe()
	defer p2.Close()
	l := newLaneConn(p1)
	defer l.Close()
	l.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 64)
	if _, err := l.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	l.SetReadDeadline(time.Time{})
	ping := muxFrame(2, muxFlagSYN, 0, 1)
	go p2.Write(ping)
	if _, err := io.ReadFull(l, buf[:len(ping)]); err != nil || !bytes.Equal(buf[:len(ping)], ping) {
		t.Fatalf("Read after the deadline was lifted: % x, %v", buf[:len(ping)], err)
	}
}

// A received frame's buffer is of its own size class, and what it holds
// while it waits is charged by that buffer: a header-only frame once took
// a pooled 64 KiB buffer and was charged 76 bytes, so a peer could make
// maxHeld of charges hold some 800 times as much memory.
func TestLaneFrameBuffers(t *testing.T) {
	for _, n := range []int{muxHeaderSize, muxHeaderSize + 1, 1000, laneFramePoolMin - 1, laneFramePoolMin,
		laneFrameSmall, laneFrameSmall + 1, laneFrameLarge, laneFrameLarge + 1, maxLaneFrame + muxHeaderSize} {
		f := getLaneFrame(n)
		if len(f) != n || cap(f) < n {
			t.Fatalf("getLaneFrame(%d): len %d cap %d", n, len(f), cap(f))
		}
		if cap(f) > 4*n {
			t.Errorf("getLaneFrame(%d): a buffer of %d bytes", n, cap(f))
		}
		if c := frameCost(f); c < cap(f) {
			t.Errorf("frameCost of a %d-byte frame in a %d-byte buffer: %d", n, cap(f), c)
		}
		putLaneFrame(f)
	}
}
