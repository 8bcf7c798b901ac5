package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// lines is a writer that hands out what is written, line by line.
type lines struct {
	w  *io.PipeWriter
	ch chan string
}

func newLines() *lines {
	r, w := io.Pipe()
	l := &lines{w: w, ch: make(chan string, 100)}
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			l.ch <- s.Text()
		}
	}()
	return l
}

func (l *lines) Write(p []byte) (int, error) { return l.w.Write(p) }

func (l *lines) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case s := <-l.ch:
			if strings.HasPrefix(s, prefix) {
				return strings.TrimPrefix(s, prefix)
			}
		case <-timeout:
			t.Fatalf("no line starting with %q", prefix)
		}
	}
}

type goChat struct {
	in   *io.PipeWriter
	out  *lines
	done chan error
}

func startGo(t *testing.T, ctx context.Context, args ...string) *goChat {
	r, w := io.Pipe()
	g := &goChat{in: w, out: newLines(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(ctx)
	go func() { g.done <- run(ctx, args, r, g.out) }()
	t.Cleanup(func() {
		cancel()
		w.Close()
		select {
		case <-g.done:
		case <-time.After(20 * time.Second):
			t.Error("chat did not stop")
		}
	})
	return g
}

func testnet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tn, err := dht.Testnet(ctx, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	t.Setenv("KEYTUNNEL_BOOTSTRAP", strings.Join(tn.Bootstrap, ","))
}

func TestChatGoGo(t *testing.T) {
	testnet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv := startGo(t, ctx)
	k := srv.out.expect(t, "key ")
	cli := startGo(t, ctx, k)
	cli.out.expect(t, "connected "+k)
	srv.out.expect(t, "connection ")
	io.WriteString(cli.in, "hello from the client\n")
	srv.out.expect(t, "hello from the client")
	io.WriteString(srv.in, "hello from the server\n")
	cli.out.expect(t, "hello from the server")
}

func TestChatWithNode(t *testing.T) {
	nodetest.Require(t)
	testnet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// Go server, the seed's Node chat as client.
	srv := startGo(t, ctx)
	k := srv.out.expect(t, "key ")
	nc := nodetest.Start(t, "chat.js", k)
	if got := nc.Expect("connected ", 60*time.Second); got != k {
		t.Fatalf("Node client connected to %s", got)
	}
	srv.out.expect(t, "connection ")
	io.WriteString(nc.Stdin(), "node says hi\n")
	srv.out.expect(t, "node says hi")
	io.WriteString(srv.in, "go says hi\n")
	nc.Expect("go says hi", 30*time.Second)

	// The seed's Node chat as server, Go client.
	ns := nodetest.Start(t, "chat.js")
	nk := ns.Expect("key ", 60*time.Second)
	cli := startGo(t, ctx, nk)
	cli.out.expect(t, "connected "+nk)
	ns.Expect("connection ", 30*time.Second)
	io.WriteString(cli.in, "go client here\n")
	ns.Expect("go client here", 30*time.Second)
	io.WriteString(ns.Stdin(), "node server here\n")
	cli.out.expect(t, "node server here")
}
