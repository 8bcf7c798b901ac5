package dhtrelay

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The WebSocket transport (@hyperswarm/dht-relay/ws) maps one protomux
// frame to one binary WebSocket message, with no length prefix of its own
// and no encryption but TLS (wss). The reference relay (bin.js) serves it
// on port 49443 with the npm ws package, which negotiates no extension
// unless the client offers one; this implementation offers none, so
// frames never have RSV bits.
//
// RFC 6455 data framing, as read and written here:
//
//	byte 0   FIN(1) RSV(3)=0 opcode(4): 0 continuation, 1 text, 2 binary,
//	         8 close, 9 ping, 10 pong
//	byte 1   MASK(1) len(7): 0–125 the length; 126: u16be follows;
//	         127: u64be follows (top bit 0)
//	[mask]   4 bytes, present iff MASK; client→server frames are masked,
//	         server→client frames are not
//	payload  len bytes, XORed with the mask (byte i with mask[i%4])
//
// Control frames (close, ping, pong) have FIN set and at most 125 bytes;
// they may arrive between the fragments of a message.

const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xa

	wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

	// wsReadChunk is how much a message buffer grows by at a time, so a
	// peer announcing a large frame gets memory only as it sends bytes.
	wsReadChunk = 64 << 10
)

// WebSocketOptions configure a WebSocket.
type WebSocketOptions struct {
	// MaxMessage bounds a received message (all its fragments); 0 means
	// DefaultMaxFrame. A longer one fails the read with ErrFrameTooLarge
	// as soon as its header says so.
	MaxMessage int
	// Header holds extra request headers for DialWebSocket (Origin, an
	// Authorization for a relay behind a proxy).
	Header http.Header
	// TLSConfig is used by DialWebSocket for wss URLs; nil means the
	// defaults with the URL's host as server name.
	TLSConfig *tls.Config
}

// WebSocket is a message-framed duplex over an established WebSocket
// connection: each WriteMessage is one binary message and each
// ReadMessage returns one whole message. It implements protomux.Framed.
// One goroutine may read while another writes.
type WebSocket struct {
	r      io.Reader
	w      io.Writer
	c      io.Closer
	client bool // masks what it sends; requires unmasked frames
	max    int

	rmu  sync.Mutex
	rerr error // sticky

	wmu       sync.Mutex
	wbuf      []byte
	sentClose bool
	werr      error

	closeOnce sync.Once
}

// NewWebSocket wraps a connection whose opening handshake is done. r and w
// are usually the same connection (r may be a bufio.Reader holding bytes
// read past the handshake); c, which may be nil, is closed by Close and
// must unblock pending reads and writes.
func NewWebSocket(r io.Reader, w io.Writer, c io.Closer, isClient bool, opts WebSocketOptions) *WebSocket {
	max := opts.MaxMessage
	if max <= 0 {
		max = DefaultMaxFrame
	}
	return &WebSocket{r: r, w: w, c: c, client: isClient, max: max}
}

func wsErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrWebSocket}, a...)...)
}

// ReadMessage returns the next data message (binary, or text as its UTF-8
// bytes, as the reference's Stream does). It answers pings, and returns an
// error wrapping ErrClosed and io.EOF when the peer closes.
func (ws *WebSocket) ReadMessage() ([]byte, error) {
	ws.rmu.Lock()
	defer ws.rmu.Unlock()
	if ws.rerr != nil {
		return nil, ws.rerr
	}
	msg, err := ws.readMessage()
	if err != nil {
		ws.rerr = err
		if errors.Is(err, ErrWebSocket) || errors.Is(err, ErrFrameTooLarge) {
			ws.sendClose(1002) // best effort; the caller closes
		}
		return nil, err
	}
	return msg, nil
}

func (ws *WebSocket) readMessage() ([]byte, error) {
	var msg []byte
	inMessage := false
	var hdr [14]byte
	for {
		if _, err := io.ReadFull(ws.r, hdr[:2]); err != nil {
			return nil, ws.readErr(err)
		}
		fin := hdr[0]&0x80 != 0
		op := hdr[0] & 0x0f
		if hdr[0]&0x70 != 0 {
			return nil, wsErr("reserved bits set (no extension was negotiated)")
		}
		masked := hdr[1]&0x80 != 0
		if masked == ws.client {
			if ws.client {
				return nil, wsErr("masked frame from the server")
			}
			return nil, wsErr("unmasked frame from the client")
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(ws.r, hdr[2:4]); err != nil {
				return nil, ws.readErr(err)
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := io.ReadFull(ws.r, hdr[2:10]); err != nil {
				return nil, ws.readErr(err)
			}
			n = binary.BigEndian.Uint64(hdr[2:10])
			if n>>63 != 0 {
				return nil, wsErr("64-bit length with the top bit set")
			}
		}
		var mask [4]byte
		if masked {
			if _, err := io.ReadFull(ws.r, mask[:]); err != nil {
				return nil, ws.readErr(err)
			}
		}

		if op >= wsClose { // control frame
			if !fin || n > 125 {
				return nil, wsErr("control frame fragmented or longer than 125 bytes")
			}
			var pb [125]byte
			p := pb[:n]
			if _, err := io.ReadFull(ws.r, p); err != nil {
				return nil, ws.readErr(err)
			}
			unmask(p, mask, 0)
			switch op {
			case wsClose:
				code := uint16(1000)
				if len(p) >= 2 {
					code = binary.BigEndian.Uint16(p)
				}
				ws.sendClose(code)
				return nil, fmt.Errorf("%w: peer sent close %d: %w", ErrClosed, code, io.EOF)
			case wsPing:
				if err := ws.writeFrame(wsPong, p); err != nil {
					return nil, err
				}
			case wsPong:
			default:
				return nil, wsErr("unknown control opcode %d", op)
			}
			continue
		}

		switch op {
		case wsText, wsBinary:
			if inMessage {
				return nil, wsErr("new message before the last one's final fragment")
			}
			inMessage = true
		case wsContinuation:
			if !inMessage {
				return nil, wsErr("continuation frame outside a message")
			}
		default:
			return nil, wsErr("unknown opcode %d", op)
		}
		if n > uint64(ws.max-len(msg)) {
			return nil, fmt.Errorf("%w: websocket message of at least %d bytes, bound %d", ErrFrameTooLarge, uint64(len(msg))+n, ws.max)
		}
		off := len(msg)
		for rem := int(n); rem > 0; {
			k := min(rem, wsReadChunk)
			msg = append(msg, make([]byte, k)...)
			if _, err := io.ReadFull(ws.r, msg[len(msg)-k:]); err != nil {
				return nil, ws.readErr(err)
			}
			rem -= k
		}
		unmask(msg[off:], mask, 0)
		if fin {
			if msg == nil {
				msg = []byte{}
			}
			return msg, nil
		}
	}
}

func (ws *WebSocket) readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return wsErr("connection ended inside a frame: %w", err)
	}
	return err
}

func unmask(p []byte, mask [4]byte, pos int) {
	if mask == [4]byte{} {
		return
	}
	for i := range p {
		p[i] ^= mask[(pos+i)&3]
	}
}

// WriteMessage sends b as one binary message (one unfragmented frame).
func (ws *WebSocket) WriteMessage(b []byte) error {
	if len(b) > ws.max {
		return fmt.Errorf("%w: websocket message of %d bytes, bound %d", ErrFrameTooLarge, len(b), ws.max)
	}
	return ws.writeFrame(wsBinary, b)
}

func (ws *WebSocket) writeFrame(op byte, p []byte) error {
	ws.wmu.Lock()
	defer ws.wmu.Unlock()
	return ws.writeFrameLocked(op, p)
}

func (ws *WebSocket) writeFrameLocked(op byte, p []byte) error {
	if ws.werr != nil {
		return ws.werr
	}
	if ws.sentClose {
		return fmt.Errorf("%w: close frame already sent", ErrClosed)
	}
	b := append(ws.wbuf[:0], 0x80|op)
	var maskBit byte
	if ws.client {
		maskBit = 0x80
	}
	switch n := len(p); {
	case n <= 125:
		b = append(b, maskBit|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, maskBit|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, maskBit|127), uint64(n))
	}
	var mask [4]byte
	if ws.client {
		// The mask only has to be unpredictable to scripts on the path
		// (RFC 6455 §10.3); crypto/rand is the simple way to get that.
		if _, err := rand.Read(mask[:]); err != nil {
			return err
		}
		b = append(b, mask[:]...)
	}
	off := len(b)
	b = append(b, p...)
	unmask(b[off:], mask, 0)
	if cap(b) <= 1<<20 {
		ws.wbuf = b
	}
	if op == wsClose {
		ws.sentClose = true
	}
	if _, err := ws.w.Write(b); err != nil {
		ws.werr = err
		return err
	}
	return nil
}

// sendClose sends a close frame with code once, unless a write is in
// progress (then the caller is about to close the connection anyway).
func (ws *WebSocket) sendClose(code uint16) {
	if !ws.wmu.TryLock() {
		return
	}
	defer ws.wmu.Unlock()
	if ws.sentClose || ws.werr != nil {
		return
	}
	_ = ws.writeFrameLocked(wsClose, binary.BigEndian.AppendUint16(nil, code))
}

// Close sends a normal close frame if no write is blocking, then closes
// the connection, which unblocks pending reads and writes.
func (ws *WebSocket) Close() error {
	var err error
	ws.closeOnce.Do(func() {
		if d, ok := ws.c.(interface{ SetWriteDeadline(time.Time) error }); ok {
			_ = d.SetWriteDeadline(time.Now().Add(time.Second))
		}
		ws.sendClose(1000)
		if ws.c != nil {
			err = ws.c.Close()
		}
	})
	return err
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// AcceptWebSocket completes a WebSocket opening handshake on an HTTP
// request (the relay side) and takes over its connection. On a request
// that is not a valid upgrade it answers 400 (426 for a wrong version) and
// returns an error wrapping ErrWebSocket.
func AcceptWebSocket(w http.ResponseWriter, r *http.Request, opts WebSocketOptions) (*WebSocket, error) {
	fail := func(code int, why string) (*WebSocket, error) {
		if code == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		http.Error(w, why, code)
		return nil, wsErr("opening handshake: %s", why)
	}
	if r.Method != http.MethodGet {
		return fail(http.StatusMethodNotAllowed, "method is not GET")
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return fail(http.StatusBadRequest, "not a websocket upgrade")
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		return fail(http.StatusUpgradeRequired, "unsupported websocket version")
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		return fail(http.StatusBadRequest, "bad Sec-WebSocket-Key")
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		return fail(http.StatusInternalServerError, "connection cannot be taken over")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, wsErr("hijack: %w", err)
	}
	_ = conn.SetDeadline(time.Time{}) // the HTTP server's timeouts end here
	resp := "HTTP/1.1 101 Switching Protocols\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + acceptKey(key) + "\r\n\r\n"
	if _, err := conn.Write([]byte(resp)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dhtrelay: websocket handshake: %w", err)
	}
	return NewWebSocket(brw.Reader, conn, conn, false, opts), nil
}

// DialWebSocket connects to a relay at rawURL (ws:// or wss://) and does
// the client's opening handshake. ctx bounds the dial and the handshake.
func DialWebSocket(ctx context.Context, rawURL string, opts WebSocketOptions) (*WebSocket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("dhtrelay: websocket url: %w", err)
	}
	host := u.Host
	switch u.Scheme {
	case "ws":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "80")
		}
	case "wss":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443")
		}
	default:
		return nil, fmt.Errorf("dhtrelay: websocket url scheme %q, want ws or wss", u.Scheme)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("dhtrelay: websocket dial: %w", err)
	}
	if u.Scheme == "wss" {
		cfg := opts.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{}
		} else {
			cfg = cfg.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		conn = tls.Client(conn, cfg)
	}
	ws, err := ClientWebSocket(ctx, conn, u, opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return ws, nil
}

// ClientWebSocket does the client's opening handshake for u on an already
// connected conn. ctx bounds the handshake (conn is closed if it ends
// first).
func ClientWebSocket(ctx context.Context, conn net.Conn, u *url.URL, opts WebSocketOptions) (*WebSocket, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
		Host:       u.Host,
	}
	for k, v := range opts.Header {
		req.Header[k] = v
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Version", "13")
	if err := req.Write(conn); err != nil {
		return nil, handshakeErr(ctx, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, handshakeErr(ctx, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, wsErr("opening handshake: server answered %s", resp.Status)
	}
	if !headerHasToken(resp.Header, "Upgrade", "websocket") || !headerHasToken(resp.Header, "Connection", "upgrade") {
		return nil, wsErr("opening handshake: response is not a websocket upgrade")
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		return nil, wsErr("opening handshake: wrong Sec-WebSocket-Accept")
	}
	if resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		return nil, wsErr("opening handshake: server chose an extension that was not offered")
	}
	if !stop() {
		return nil, handshakeErr(ctx, ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	return NewWebSocket(br, conn, conn, true, opts), nil
}

func handshakeErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return fmt.Errorf("dhtrelay: websocket handshake: %w", err)
}
