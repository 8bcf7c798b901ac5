package dhtrelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/protomux"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// echoCheck opens the relay channel over framed, sends every sample and
// checks the peer sends each back (ping is answered with pong, pong with
// nothing), as interop/dhtrelay-peer.js does.
func echoCheck(t *testing.T, framed protomux.Framed) int {
	mux := protomux.New(framed, protomux.Options{})
	t.Cleanup(func() { mux.Close() })
	recv := make(chan Message, 128)
	ch, err := NewChannel(mux, ChannelOptions{OnMessage: func(m Message) { recv <- m }})
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range samples {
			if !yield(n) {
				return
			}
		}
	})
	var want []Message
	for _, n := range names {
		m := samples[n]
		if err := ch.Send(m); err != nil {
			t.Fatalf("send %s: %v", n, err)
		}
		switch m.(type) {
		case Ping:
			want = append(want, Pong{})
		case Pong:
		default:
			want = append(want, m)
		}
	}
	timeout := time.After(20 * time.Second)
	for i, w := range want {
		select {
		case got := <-recv:
			if !reflect.DeepEqual(normalize(got), normalize(w)) {
				t.Fatalf("echo %d: got %s %+v, want %s %+v", i, got.Type(), got, w.Type(), w)
			}
		case <-timeout:
			t.Fatalf("echo %d (%s): timed out; mux error %v", i, w.Type(), mux.Err())
		}
	}
	return len(want)
}

// TestNodeTransports runs the relay channel against the reference's
// Protocol over both of its transports.
func TestNodeTransports(t *testing.T) {
	for _, mode := range []string{"tcp", "ws"} {
		t.Run(mode, func(t *testing.T) {
			p := nodetest.Start(t, "dhtrelay-peer.js", mode)
			port := p.Expect("listening ", 30*time.Second)
			ctx := testCtx(t, 20*time.Second)
			var framed protomux.Framed
			switch mode {
			case "tcp":
				var d net.Dialer
				conn, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+port)
				if err != nil {
					t.Fatal(err)
				}
				f, _, err := TCP(ctx, conn, true, TCPOptions{})
				if err != nil {
					t.Fatal(err)
				}
				framed = f
			case "ws":
				ws, err := DialWebSocket(ctx, "ws://127.0.0.1:"+port+"/", WebSocketOptions{})
				if err != nil {
					t.Fatal(err)
				}
				framed = ws
			}
			n := echoCheck(t, framed)
			t.Logf("%s: %d messages echoed by the reference", mode, n)
		})
	}
}

// TestNodeWebSocketClient has the reference's WebSocket client (the ws
// package under @hyperswarm/dht-relay/ws) connect to AcceptWebSocket.
func TestNodeWebSocketClient(t *testing.T) {
	nodetest.Require(t)
	conns := make(chan *WebSocket, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := AcceptWebSocket(w, r, WebSocketOptions{})
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		conns <- ws
	}))
	defer srv.Close()
	p := nodetest.Start(t, "dhtrelay-peer.js", "ws-client", "ws"+strings.TrimPrefix(srv.URL, "http")+"/")
	select {
	case ws := <-conns:
		n := echoCheck(t, ws)
		t.Logf("%d messages echoed by the reference client", n)
	case <-time.After(30 * time.Second):
		t.Fatalf("no connection from node; stderr: %s", p.Stderr())
	}
}

// TestWebSocketLoopback runs the echo over Go's own WebSocket client and
// server.
func TestWebSocketLoopback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := AcceptWebSocket(w, r, WebSocketOptions{})
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(m); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	ctx := testCtx(t, 10*time.Second)
	ws, err := DialWebSocket(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/relay", WebSocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 300000} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		if err := ws.WriteMessage(msg); err != nil {
			t.Fatal(err)
		}
		got, err := ws.ReadMessage()
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes: %d bytes, %v", n, len(got), err)
		}
	}
	// A plain HTTP request is refused.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %s", resp.Status)
	}
}

// wsFrame builds a raw frame as a peer would send it.
func wsFrame(fin bool, op byte, mask []byte, p []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	var mb byte
	if mask != nil {
		mb = 0x80
	}
	switch {
	case len(p) <= 125:
		b = append(b, mb|byte(len(p)))
	case len(p) <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, mb|126), uint16(len(p)))
	default:
		b = binary.BigEndian.AppendUint64(append(b, mb|127), uint64(len(p)))
	}
	if mask != nil {
		b = append(b, mask...)
		q := slices.Clone(p)
		for i := range q {
			q[i] ^= mask[i%4]
		}
		return append(b, q...)
	}
	return append(b, p...)
}

// rw reads from Reader and records writes.
type rw struct {
	io.Reader
	out bytes.Buffer
}

func (c *rw) Write(p []byte) (int, error) { return c.out.Write(p) }

func TestWebSocketFraming(t *testing.T) {
	mask := []byte{1, 2, 3, 4}
	// As the server: fragments with a ping between them, then a text
	// message; the ping is answered with an unmasked pong.
	in := slices.Concat(
		wsFrame(false, wsBinary, mask, []byte("he")),
		wsFrame(true, wsPing, mask, []byte("p")),
		wsFrame(false, wsContinuation, mask, []byte("ll")),
		wsFrame(true, wsContinuation, mask, []byte("o")),
		wsFrame(true, wsText, mask, []byte("txt")),
		wsFrame(true, wsClose, mask, []byte{0x03, 0xe8}),
	)
	c := &rw{Reader: bytes.NewReader(in)}
	ws := NewWebSocket(c, c, nil, false, WebSocketOptions{})
	for _, want := range []string{"hello", "txt"} {
		got, err := ws.ReadMessage()
		if err != nil || string(got) != want {
			t.Fatalf("got %q %v, want %q", got, err, want)
		}
	}
	if _, err := ws.ReadMessage(); !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) {
		t.Fatalf("after close frame: %v", err)
	}
	wantOut := slices.Concat(wsFrame(true, wsPong, nil, []byte("p")), wsFrame(true, wsClose, nil, []byte{0x03, 0xe8}))
	if !bytes.Equal(c.out.Bytes(), wantOut) {
		t.Fatalf("server wrote %x, want %x", c.out.Bytes(), wantOut)
	}

	bad := []struct {
		name   string
		client bool
		in     []byte
		want   error
	}{
		{"unmasked from client", false, wsFrame(true, wsBinary, nil, []byte("x")), ErrWebSocket},
		{"masked from server", true, wsFrame(true, wsBinary, mask, []byte("x")), ErrWebSocket},
		{"reserved bit", true, []byte{0xc2, 0}, ErrWebSocket},
		{"unknown opcode", true, []byte{0x83, 0}, ErrWebSocket},
		{"stray continuation", true, wsFrame(true, wsContinuation, nil, nil), ErrWebSocket},
		{"interleaved message", true, slices.Concat(wsFrame(false, wsBinary, nil, nil), wsFrame(true, wsBinary, nil, nil)), ErrWebSocket},
		{"long ping", true, wsFrame(true, wsPing, nil, make([]byte, 126)), ErrWebSocket},
		{"fragmented ping", true, wsFrame(false, wsPing, nil, nil), ErrWebSocket},
		{"huge length", true, []byte{0x82, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ErrFrameTooLarge},
		{"top length bit", true, []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, ErrWebSocket},
		{"fragments over bound", true, slices.Concat(wsFrame(false, wsBinary, nil, make([]byte, 600)), wsFrame(true, wsContinuation, nil, make([]byte, 600))), ErrFrameTooLarge},
		{"cut payload", true, wsFrame(true, wsBinary, nil, make([]byte, 10))[:5], ErrWebSocket},
	}
	for _, c := range bad {
		conn := &rw{Reader: bytes.NewReader(c.in)}
		ws := NewWebSocket(conn, conn, nil, c.client, WebSocketOptions{MaxMessage: 1000})
		var err error
		n := allocatedBytes(func() { _, err = ws.ReadMessage() })
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if n > 64<<10 {
			t.Errorf("%s: %d bytes allocated", c.name, n)
		}
		if _, err2 := ws.ReadMessage(); err2 == nil {
			t.Errorf("%s: error not sticky", c.name)
		}
	}
	// Writes above the bound are refused.
	ws = NewWebSocket(c, c, nil, true, WebSocketOptions{MaxMessage: 10})
	if err := ws.WriteMessage(make([]byte, 11)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("big write: %v", err)
	}
}

// FuzzWebSocketRead feeds arbitrary bytes to both roles' reader: no panic,
// every message within the bound, and every error a clear one.
func FuzzWebSocketRead(f *testing.F) {
	mask := []byte{9, 8, 7, 6}
	f.Add(slices.Concat(wsFrame(false, wsBinary, mask, []byte("he")), wsFrame(true, wsPing, mask, nil), wsFrame(true, wsContinuation, mask, []byte("y"))), true)
	f.Add(wsFrame(true, wsBinary, nil, AppendFrame(nil, 1, samples["data"])), false)
	f.Add([]byte{0x82, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false)
	f.Fuzz(func(t *testing.T, in []byte, server bool) {
		c := &rw{Reader: bytes.NewReader(in)}
		ws := NewWebSocket(c, c, nil, !server, WebSocketOptions{MaxMessage: 4096})
		for range 64 {
			m, err := ws.ReadMessage()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrWebSocket) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("unclassified error %v", err)
				}
				return
			}
			if len(m) > 4096 {
				t.Fatalf("message of %d bytes over the bound", len(m))
			}
		}
	})
}

// TestTCPLoopback runs the TCP transport between two Go ends.
func TestTCPLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx := testCtx(t, 10*time.Second)
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		f, _, err := TCP(ctx, conn, false, TCPOptions{})
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		for {
			m, err := f.ReadMessage()
			if err != nil {
				done <- nil
				return
			}
			if err := f.WriteMessage(m); err != nil {
				done <- err
				return
			}
		}
	}()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := TCP(ctx, conn, true, TCPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frame := AppendFrame(nil, 1, samples["data-big"])
	if err := f.WriteMessage(frame); err != nil {
		t.Fatal(err)
	}
	got, err := f.ReadMessage()
	if err != nil || !bytes.Equal(got, frame) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	f.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("server did not end")
	}
}
