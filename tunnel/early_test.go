package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/libp2p/go-yamux/v5"
)

// lateReplier is a keytunnel server that holds its reply to the preamble
// until the client's first stream has brought want: a client that waited
// for the reply before opening streams would never get one.
type lateReplier struct {
	t    *testing.T
	ln   *fakeListener
	want []byte
	// refuse, if set, is the refusal sent instead of an OK reply.
	refuse string
	// before is what had arrived behind the preamble when the reply went.
	before chan []byte
}

func (s *lateReplier) serve() {
	pc, err := s.ln.Accept()
	if err != nil {
		return
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	pre := make([]byte, len(preamble))
	if _, err := io.ReadFull(pc, pre); err != nil || string(pre) != preamble {
		s.t.Errorf("preamble: %q, %v", pre, err)
		return
	}
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, s.want) {
		n, err := pc.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			s.t.Errorf("waiting for the stream's first bytes before replying: %v (got %q)", err, got)
			s.before <- got
			return
		}
	}
	s.before <- got
	pc.SetDeadline(time.Time{})
	if s.refuse != "" {
		refuse(pc, s.refuse)
		return
	}
	if err := writeReply(pc, replyOK, ""); err != nil {
		s.t.Error(err)
		return
	}
	// The frames read so far go to yamux first.
	sess, err := yamux.Server(replayNetConn{pc, io.MultiReader(bytes.NewReader(got), pc)}, nil, nil)
	if err != nil {
		s.t.Error(err)
		return
	}
	defer sess.Close()
	st, err := sess.AcceptStream()
	if err != nil {
		s.t.Error(err)
		return
	}
	b := make([]byte, len(s.want))
	if _, err := io.ReadFull(st, b); err != nil {
		s.t.Error(err)
		return
	}
	st.Write(bytes.ToUpper(b))
	// CloseWrite, not Close: go-yamux answers frames for a stream closed
	// for reading (the client's window update for this write) with a
	// reset, which would lose the write in the client's local socket.
	st.CloseWrite()
	io.Copy(io.Discard, st)
}

type replayNetConn struct {
	net.Conn
	r io.Reader
}

func (c replayNetConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func newLateReplier(t *testing.T, n *fakeNet, want, refuse string) *lateReplier {
	s := &lateReplier{t: t, ln: n.listen(genKey(t)), want: []byte(want), refuse: refuse, before: make(chan []byte, 1)}
	done := make(chan struct{})
	go func() { defer close(done); s.serve() }()
	t.Cleanup(func() { s.ln.Close(); <-done })
	return s
}

// A forward's first connection and Pipe's stream send their first bytes
// right behind the preamble, without waiting a round trip for the
// server's reply (replyConn); the reply then still decides.
func TestStreamsBeforeReply(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	client := genKey(t)

	t.Run("forward", func(t *testing.T) {
		s := newLateReplier(t, n, "hello", "")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f := NewForwarder(n.dialer(client), s.ln.kp.Public, ln, ForwardOptions{Logger: testLogger(t, io.Discard)})
		defer f.Close()
		c := dialTCP(t, ln.Addr().String())
		defer c.Close()
		io.WriteString(c, "hello")
		b, err := io.ReadAll(c)
		if string(b) != "HELLO" {
			t.Fatalf("read %q, %v", b, err)
		}
		if before := <-s.before; !bytes.Contains(before, []byte("hello")) {
			t.Fatalf("before the reply the server had %q", before)
		}
	})

	t.Run("pipe", func(t *testing.T) {
		s := newLateReplier(t, n, "SSH-2.0-client", "")
		// stdin ends only once the server's answer has arrived, as an
		// ssh client's goes on after it has read the server's banner: a
		// Pipe that waited for the reply would never send the banner.
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		go io.WriteString(inW, "SSH-2.0-client")
		got := make(chan string, 1)
		go func() {
			b := make([]byte, len("SSH-2.0-CLIENT"))
			_, err := io.ReadFull(outR, b)
			inW.CloseWithError(err)
			got <- string(b)
			io.Copy(io.Discard, outR)
		}()
		err := Pipe(context.Background(), n.dialer(client), s.ln.kp.Public, struct {
			io.Reader
			io.Writer
		}{inR, outW}, ForwardOptions{Logger: testLogger(t, io.Discard)})
		outW.Close()
		if out := <-got; err != nil || out != "SSH-2.0-CLIENT" {
			t.Fatalf("Pipe: %q, %v", out, err)
		}
	})

	// A refusal that comes after the first stream's bytes went out still
	// reaches the user as the refusal, with its reason.
	t.Run("refused", func(t *testing.T) {
		s := newLateReplier(t, n, "hello", "key not in the allow list")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var lg syncBuffer
		ev := &eventLog{}
		f := NewForwarder(n.dialer(client), s.ln.kp.Public, ln, ForwardOptions{Logger: testLogger(t, &lg), OnEvent: ev.add})
		defer f.Close()
		c := dialTCP(t, ln.Addr().String())
		defer c.Close()
		io.WriteString(c, "hello")
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Fatalf("refused connection read %q", b)
		}
		<-s.before
		// A later connection fails at once with the refusal: the forward
		// knows it now.
		c2 := dialTCP(t, ln.Addr().String())
		defer c2.Close()
		if b, _ := io.ReadAll(c2); len(b) != 0 {
			t.Fatalf("second connection read %q", b)
		}
		waitFor(t, "both connections' log lines", func() bool { return strings.Count(lg.String(), "dropping local connection") >= 2 })
		if log := lg.String(); strings.Count(log, "key not in the allow list") < 3 {
			t.Fatalf("the log does not give both connections the refusal's reason:\n%s", log)
		}
		if len(ev.of(EventConnected)) != 0 {
			t.Fatalf("a refused session was reported connected: %+v", ev.all())
		}
		if r := ev.of(EventRefused); len(r) != 1 || !errors.Is(r[0].Err, ErrRefused) {
			t.Fatalf("refused events: %+v", r)
		}
	})
}
