package dhtrelay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: %s", resp.Status)
	}
}

// Raw frames as a peer would send them (RFC 6455 §5.2), to check how
// AcceptWebSocket's reader takes bad input.
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xa
)

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

// wsReads is a WebSocket server whose every client's messages (and final
// error) are reported.
type wsReads struct {
	addr string
	got  chan wsRead
}

type wsRead struct {
	msgs [][]byte
	err  error
}

func newWSReads(t testing.TB, max int) *wsReads {
	r := &wsReads{got: make(chan wsRead, 1)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ws, err := AcceptWebSocket(w, req, WebSocketOptions{MaxMessage: max})
		if err != nil {
			r.got <- wsRead{err: err}
			return
		}
		defer ws.Close()
		var res wsRead
		for {
			m, err := ws.ReadMessage()
			if err != nil {
				if _, err2 := ws.ReadMessage(); err2 == nil {
					err = fmt.Errorf("error not sticky: %w", err)
				}
				res.err = err
				break
			}
			res.msgs = append(res.msgs, m)
		}
		r.got <- res
	}))
	t.Cleanup(srv.Close)
	r.addr = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// rawWS opens a WebSocket to addr by hand (a fixed key, no extension) and
// returns the connection after the 101 response.
func rawWS(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: %s %v", resp.Status, resp.Header)
	}
	return c, br
}

// TestWebSocketFraming sends AcceptWebSocket's reader fragments with a
// ping between them and a text message (read as its bytes; the ping
// answered by an unmasked pong, the close by a close), then frames that
// break RFC 6455 or the bound, each of which must end the reader with an
// error of the right class.
func TestWebSocketFraming(t *testing.T) {
	mask := []byte{1, 2, 3, 4}
	r := newWSReads(t, 1000)
	c, br := rawWS(t, r.addr)
	c.Write(slices.Concat(
		wsFrame(false, wsBinary, mask, []byte("he")),
		wsFrame(true, wsPing, mask, []byte("p")),
		wsFrame(false, wsContinuation, mask, []byte("ll")),
		wsFrame(true, wsContinuation, mask, []byte("o")),
		wsFrame(true, wsText, mask, []byte("txt")),
		wsFrame(true, wsClose, mask, []byte{0x03, 0xe8}),
	))
	res := <-r.got
	if len(res.msgs) != 2 || string(res.msgs[0]) != "hello" || string(res.msgs[1]) != "txt" {
		t.Fatalf("messages %q", res.msgs)
	}
	if !errors.Is(res.err, ErrClosed) || !errors.Is(res.err, io.EOF) {
		t.Fatalf("after close frame: %v", res.err)
	}
	wantOut := slices.Concat(wsFrame(true, wsPong, nil, []byte("p")), wsFrame(true, wsClose, nil, []byte{0x03, 0xe8}))
	out, _ := io.ReadAll(br)
	if !bytes.Equal(out, wantOut) {
		t.Fatalf("server wrote %x, want %x", out, wantOut)
	}

	bad := []struct {
		name string
		in   []byte
		want error
	}{
		{"unmasked from client", wsFrame(true, wsBinary, nil, []byte("x")), ErrWebSocket},
		{"reserved bit", []byte{0xc2, 0x80, 1, 2, 3, 4}, ErrWebSocket},
		{"unknown opcode", []byte{0x83, 0x80, 1, 2, 3, 4}, ErrWebSocket},
		{"stray continuation", wsFrame(true, wsContinuation, mask, nil), ErrWebSocket},
		{"interleaved message", slices.Concat(wsFrame(false, wsBinary, mask, nil), wsFrame(true, wsBinary, mask, nil)), ErrWebSocket},
		{"long ping", wsFrame(true, wsPing, mask, make([]byte, 126)), ErrWebSocket},
		{"fragmented ping", wsFrame(false, wsPing, mask, nil), ErrWebSocket},
		// The length alone allocates nothing: the reader takes memory only
		// as payload arrives, and fails once it passes the bound.
		{"huge length", slices.Concat([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, make([]byte, 2000)), ErrFrameTooLarge},
		{"message over bound", wsFrame(true, wsBinary, mask, make([]byte, 1001)), ErrFrameTooLarge},
		{"fragments over bound", slices.Concat(wsFrame(false, wsBinary, mask, make([]byte, 600)), wsFrame(true, wsContinuation, mask, make([]byte, 600))), ErrFrameTooLarge},
		{"cut payload", wsFrame(true, wsBinary, mask, make([]byte, 10))[:9], ErrWebSocket},
	}
	for _, b := range bad {
		c, _ := rawWS(t, r.addr)
		c.Write(b.in)
		c.(*net.TCPConn).CloseWrite()
		res := <-r.got
		if len(res.msgs) != 0 || !errors.Is(res.err, b.want) {
			t.Errorf("%s: %d messages, %v; want %v", b.name, len(res.msgs), res.err, b.want)
		}
		c.Close()
	}
	// Writes above the bound are refused.
	ws, err := DialWebSocket(testCtx(t, 10*time.Second), "ws://"+r.addr+"/", WebSocketOptions{MaxMessage: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(make([]byte, 11)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("big write: %v", err)
	}
	ws.Close()
	<-r.got
}

// FuzzWebSocketRead feeds arbitrary bytes to AcceptWebSocket's reader
// after a real handshake: no panic, every message within the bound, and
// every error a clear one.
func FuzzWebSocketRead(f *testing.F) {
	mask := []byte{9, 8, 7, 6}
	f.Add(slices.Concat(wsFrame(false, wsBinary, mask, []byte("he")), wsFrame(true, wsPing, mask, nil), wsFrame(true, wsContinuation, mask, []byte("y"))))
	f.Add(wsFrame(true, wsBinary, mask, AppendFrame(nil, 1, samples["data"])))
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	r := newWSReads(f, 4096)
	f.Fuzz(func(t *testing.T, in []byte) {
		c, _ := rawWS(t, r.addr)
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		res := <-r.got
		c.Close()
		err := res.err
		if !errors.Is(err, io.EOF) && !errors.Is(err, ErrWebSocket) && !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrClosed) {
			t.Fatalf("unclassified error %v", err)
		}
		for _, m := range res.msgs {
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
