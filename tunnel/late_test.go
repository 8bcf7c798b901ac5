package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/internal/key"
)

// slowStartDialer's connections hold their first Write back, as a long
// path delays a client's first bytes.
type slowStartDialer struct {
	Dialer
	delay time.Duration
}

func (d slowStartDialer) Dial(ctx context.Context, remote key.PublicKey) (PeerConn, error) {
	pc, err := d.Dialer.Dial(ctx, remote)
	if err != nil {
		return nil, err
	}
	return &slowStart{PeerConn: pc, delay: d.delay}, nil
}

type slowStart struct {
	PeerConn
	delay time.Duration
	once  sync.Once
}

func (c *slowStart) Write(b []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.PeerConn.Write(b)
}

// A keytunnel client whose preamble arrives after the detection wait still
// gets its mux session when the target had not spoken yet.
func TestLatePreamble(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{DetectTimeout: 50 * time.Millisecond}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder(slowStartDialer{r.dialer, 200 * time.Millisecond}, r.server.Public, ln, ForwardOptions{Logger: testLogger(t, nil)})
	t.Cleanup(func() { f.Close() })
	for range 3 {
		if err := echoRoundTrip(ln.Addr().String(), 50_000); err != nil {
			t.Fatal(err)
		}
	}
	if d := r.n.dials.Load(); d != 1 {
		t.Fatalf("%d dials, want 1", d)
	}
	if !strings.Contains(r.serverLg.String(), "late preamble") {
		t.Fatalf("server log:\n%s", r.serverLg.String())
	}
}

// A raw client that stays silent past the wait and then talks first is
// still raw, with its bytes intact.
func TestRawLateSpeaker(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	r := newRig(t, tg.addr(), ExposeOptions{DetectTimeout: 50 * time.Millisecond}, nil)
	for _, msg := range []string{"hello", "\x00keytunnel/mux9\n and more"} {
		pc, err := slowStartDialer{r.dialer, 150 * time.Millisecond}.Dial(context.Background(), r.server.Public)
		if err != nil {
			t.Fatal(err)
		}
		pc.SetDeadline(time.Now().Add(10 * time.Second))
		go func() { io.WriteString(pc, msg); pc.CloseWrite() }()
		got, err := io.ReadAll(pc)
		pc.Close()
		if err != nil || string(got) != msg {
			t.Fatalf("got %q, %v", got, err)
		}
	}
}

// A mux Forward that reaches a raw server (hypertele-server in front of an
// echo service, which echoes the preamble) fails with ErrProtocol instead
// of hanging or corrupting data.
func TestMuxForwardToRawServer(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, echo)
	n := newFakeNet(t)
	srv := genKey(t)
	hyperteleServer(t, n.listen(srv), tg.addr())
	var err error
	err = Pipe(context.Background(), n.dialer(genKey(t)), srv.Public, &bytes.Buffer{}, ForwardOptions{DialTimeout: 5 * time.Second})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Pipe to a raw server: %v, want ErrProtocol", err)
	}
	t.Log(err)
}

// rttConn reports a path's smoothed RTT, as a secret stream over udx does.
type rttConn struct {
	PeerConn
	rtt time.Duration
}

func (c rttConn) RTT() time.Duration { return c.rtt }

type rttListener struct {
	PeerListener
	rtt time.Duration
}

func (l rttListener) Accept() (PeerConn, error) {
	pc, err := l.PeerListener.Accept()
	if err != nil {
		return nil, err
	}
	return rttConn{pc, l.rtt}, nil
}

func TestDetectWait(t *testing.T) {
	const base = 400 * time.Millisecond
	for _, c := range []struct {
		pc   PeerConn
		want time.Duration
	}{
		{fakeConn{}, base},                                 // no RTT to go by
		{rttConn{fakeConn{}, 0}, base},                     // no sample yet
		{rttConn{fakeConn{}, 20 * time.Millisecond}, base}, // short path
		{rttConn{fakeConn{}, 300 * time.Millisecond}, 1100 * time.Millisecond},
	} {
		if got := detectWait(base, c.pc); got != c.want {
			t.Errorf("detectWait(%v, %T) = %v, want %v", base, c.pc, got, c.want)
		}
	}
}

// On a slow path the Exposer waits for the preamble in proportion to the
// RTT: a client whose preamble arrives 300 ms late on a 200 ms path still
// gets its mux session though the target speaks first (so the late
// preamble could not be rescued), where the bare 50 ms wait would have
// taken it for a raw client.
func TestDetectWaitSlowPath(t *testing.T) {
	conntest.CheckGoroutines(t)
	tg := newTarget(t, func(c *net.TCPConn) {
		io.WriteString(c, "banner\n")
		io.Copy(c, c)
	})
	n := newFakeNet(t)
	srv := genKey(t)
	lg := &syncBuffer{}
	e := NewExposer(rttListener{n.listen(srv), 200 * time.Millisecond}, tg.addr(),
		ExposeOptions{DetectTimeout: 50 * time.Millisecond, Logger: testLogger(t, lg)})
	t.Cleanup(func() { e.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder(slowStartDialer{n.dialer(genKey(t)), 300 * time.Millisecond}, srv.Public, ln, ForwardOptions{Logger: testLogger(t, nil)})
	t.Cleanup(func() { f.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 7)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "banner\n" {
		t.Fatalf("read %q, %v; server log:\n%s", got, err, lg.String())
	}
	if !strings.Contains(lg.String(), "mode=mux") {
		t.Fatalf("the peer was not served as mux; server log:\n%s", lg.String())
	}
}
