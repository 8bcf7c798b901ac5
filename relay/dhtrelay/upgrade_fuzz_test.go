package dhtrelay

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// upgradeRequest is what a browser sends to open the relay's WebSocket.
func upgradeRequest(extra string) []byte {
	return []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n")
}

// FuzzWebSocketUpgrade sends fuzzed request bytes to a relay's
// ServeWebSocket over loopback (cut after the header block: the server
// has no DHT node, so the session must get no messages). The relay must
// answer with well-formed HTTP or close, switch protocols only for a GET
// carrying a WebSocket key it answers correctly and without extensions,
// and count no connection as pending or client once it is gone.
func FuzzWebSocketUpgrade(f *testing.F) {
	f.Add(upgradeRequest(""))
	f.Add(upgradeRequest("Origin: https://example.com\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"))
	f.Add(upgradeRequest("X-Forwarded-For: 192.0.2.1, 10.0.0.1\r\n"))
	f.Add(bytes.Replace(upgradeRequest(""), []byte("13"), []byte("8"), 1))
	f.Add(bytes.Replace(upgradeRequest(""), []byte("GET"), []byte("POST"), 1))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte("\x16\x03\x01\x00\x05hello"))
	s := NewServer(nil, ServerOptions{Logger: testLogger(), FirstMessageTimeout: 2 * time.Second, BehindProxy: true})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.ServeWebSocket(l) }()
	f.Cleanup(func() {
		s.Close()
		<-served
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		if i := bytes.Index(in, []byte("\r\n\r\n")); i >= 0 {
			in = in[:i+4]
		}
		c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		br := bufio.NewReader(c)
		upgraded := false
		if _, err := br.Peek(1); err == nil {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %q: malformed response: %v", in, err)
			}
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusSwitchingProtocols {
				checkUpgrade(t, in, resp)
				upgraded = true
			}
		} else if isTimeoutErr(err) {
			t.Fatalf("request %q: no answer and no close", in)
		}
		if !upgraded && bytes.Equal(in, upgradeRequest("")) {
			t.Fatal("a browser's upgrade request was not upgraded")
		}
		c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for s.pending.Count() != 0 || s.Clients() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("request %q: %d pending, %d clients after it closed", in, s.pending.Count(), s.Clients())
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// checkUpgrade fails t unless req, which got resp 101, was a WebSocket
// GET and resp accepts its key without extensions.
func checkUpgrade(t *testing.T, in []byte, resp *http.Response) {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
	if err != nil {
		t.Fatalf("101 to a request net/http does not parse (%v): %q", err, in)
	}
	key := req.Header.Get("Sec-WebSocket-Key")
	if req.Method != http.MethodGet || key == "" || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") ||
		req.Header.Get("Sec-WebSocket-Version") != "13" {
		t.Fatalf("101 to a request that is no WebSocket upgrade: %q", in)
	}
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(h[:]); got != want {
		t.Fatalf("request %q: Sec-WebSocket-Accept %q, want %q", in, got, want)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("request %q: extension %q negotiated", in, ext)
	}
}

func isTimeoutErr(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
