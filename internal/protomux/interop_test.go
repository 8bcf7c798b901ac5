package protomux

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/secretstream"
)

// recorder keeps the first byte pair of every frame read, to see batches.
type recorder struct {
	Framed
	mu      sync.Mutex
	batches int
}

func (r *recorder) ReadMessage() ([]byte, error) {
	b, err := r.Framed.ReadMessage()
	if len(b) >= 2 && b[0] == 0 && b[1] == 0 {
		r.mu.Lock()
		r.batches++
		r.mu.Unlock()
	}
	return b, err
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.batches
}

// lines waits for Node output lines in any order.
type lines struct {
	t    *testing.T
	p    *nodetest.Proc
	seen map[string]int
}

func (l *lines) want(s string) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for l.seen[s] == 0 {
		line, err := l.p.Line(ctx)
		if err != nil {
			l.t.Fatalf("waiting for Node line %q: %v", s, err)
		}
		l.seen[line]++
	}
	l.seen[s]--
}

type events struct {
	c chan string
}

func (e *events) add(format string, a ...any) { e.c <- fmt.Sprintf(format, a...) }

func (e *events) want(t *testing.T, s string) {
	t.Helper()
	select {
	case got := <-e.c:
		if got != s {
			t.Fatalf("Go event %q, want %q", got, s)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("timeout waiting for Go event %q", s)
	}
}

func TestInteropNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := nodetest.Start(t, "protomux-peer.js", "--port", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	nl := &lines{t: t, p: p, seen: map[string]int{}}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(15 * time.Second))
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ss, err := secretstream.New(raw, secretstream.Options{IsInitiator: true})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Framed: SecretStream(ss)}
	m := New(rec, Options{})
	defer m.Close()
	ev := &events{c: make(chan string, 64)}

	channel := func(protocol string, id []byte, hs string) (*Channel, *Message[[]byte], *Message[uint64]) {
		ch := m.NewChannel(ChannelOptions{
			Protocol: protocol, ID: id, Handshake: true,
			OnOpen: func(c *Channel, h []byte) {
				s, err := String{}.Decode(h)
				ev.add("open %s %s %v", protocol, s, err)
			},
			OnClose: func(c *Channel, remote bool) { ev.add("closed %s remote=%v", protocol, remote) },
		})
		r := AddMessage(ch, Raw{}, func(c *Channel, b []byte) { ev.add("msg %s 0 %s", protocol, b) })
		n := AddMessage(ch, Uint{}, func(c *Channel, v uint64) { ev.add("msg %s 1 %d", protocol, v) })
		if err := ch.Open(String{}.Append(nil, hs)); err != nil {
			t.Fatal(err)
		}
		return ch, r, n
	}

	// Node's channel opened first on its side; Go opens its end.
	nodeChan, nodeRaw, _ := channel("node-chan", []byte{1, 2}, "hi-from-go")
	ev.want(t, "open node-chan hi-from-node <nil>")
	nl.want("open node-chan hi-from-go")
	ev.want(t, "msg node-chan 0 a")
	ev.want(t, "msg node-chan 0 b")
	ev.want(t, "msg node-chan 1 42")
	if rec.count() == 0 {
		t.Errorf("Node's corked messages did not arrive as a BATCH frame")
	}

	// Go opens, Node accepts through pair().
	echo, echoRaw, echoNum := channel("echo", []byte{0xab, 0xcd}, "go-hs")
	ev.want(t, "open echo node:abcd <nil>")
	nl.want("open echo go-hs")
	// A corked batch from Go: Node receives a BATCH, and corks its replies.
	before := rec.count()
	m.Cork()
	echoRaw.Send([]byte("x"))
	echoRaw.Send([]byte("y"))
	echoNum.Send(9)
	m.Uncork()
	nl.want("msg echo 0 78")
	nl.want("msg echo 0 79")
	nl.want("msg echo 1 9")
	ev.want(t, "msg echo 0 echo:x")
	ev.want(t, "msg echo 0 echo:y")
	ev.want(t, "msg echo 1 10")
	if rec.count() != before+1 {
		t.Errorf("Node's replies to a batch: %d BATCH frames, want 1", rec.count()-before)
	}

	// Rejections both ways.
	nobody := m.NewChannel(ChannelOptions{Protocol: "nobody", OnClose: func(c *Channel, remote bool) { ev.add("closed nobody remote=%v", remote) }})
	nobody.Open(nil)
	if ok, err := nobody.WaitOpened(testCtx(t)); ok || err != nil {
		t.Fatalf("nobody opened: %v %v", ok, err)
	}
	ev.want(t, "closed nobody remote=true")
	nl.want("closed reject-me remote=true opened=false")

	// Go closes echo; Node closes node-chan.
	echo.Close()
	ev.want(t, "closed echo remote=false")
	nl.want("closed echo remote=true opened=true")
	nodeRaw.Send([]byte("close-please"))
	ev.want(t, "closed node-chan remote=true")
	nl.want("closed node-chan remote=false opened=true")
	select {
	case <-nodeChan.Closed():
	default:
		t.Fatal("node-chan not closed")
	}

	// Ids are reused on both sides and a second echo channel works.
	_, echo2Raw, _ := channel("echo", []byte{0xef}, "again")
	ev.want(t, "open echo node:ef <nil>")
	nl.want("open echo again")
	echo2Raw.Send([]byte("z"))
	ev.want(t, "msg echo 0 echo:z")

	if err := m.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	nl.want("stream-closed")
}
