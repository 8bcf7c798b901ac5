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
	for _, msg := range []string{"hello", "\x00keytunnel/mux2\n and more"} {
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
