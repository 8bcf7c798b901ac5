package dhtrelay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The WebSocket transport (@hyperswarm/dht-relay/ws) maps one protomux
// frame to one binary WebSocket message, with no length prefix of its own
// and no encryption but TLS (wss). The reference relay (bin.js) serves it
// on port 49443 with the npm ws package, which negotiates no extension
// unless the client offers one. RFC 6455 itself (framing, masking, the
// opening handshake, control frames) is github.com/coder/websocket's
// job; this file maps it onto protomux.Framed: one binary message per
// frame each way, text messages read as their UTF-8 bytes (as the
// reference's Stream does), no compression offered or accepted, and a
// bound on what one received message may hold.

// WebSocketOptions configure a WebSocket.
type WebSocketOptions struct {
	// MaxMessage bounds a received message (all its fragments); 0 means
	// DefaultMaxFrame. A longer one fails the read with ErrFrameTooLarge
	// (and the peer gets close code 1009).
	MaxMessage int
	// Header holds extra request headers for DialWebSocket (Origin, an
	// Authorization for a relay behind a proxy).
	Header http.Header
	// TLSConfig is used by DialWebSocket for wss URLs; nil means the
	// defaults with the URL's host as server name.
	TLSConfig *tls.Config
}

func (o WebSocketOptions) max() int {
	if o.MaxMessage <= 0 {
		return DefaultMaxFrame
	}
	return o.MaxMessage
}

// closeWait bounds Close: the close frame and the peer's answer. A peer
// that answers neither within it is cut off.
const closeWait = time.Second

// WebSocket is a message-framed duplex over an established WebSocket
// connection: each WriteMessage is one binary message and each
// ReadMessage returns one whole message. It implements protomux.Framed.
// One goroutine may read while another writes.
type WebSocket struct {
	c   *websocket.Conn
	raw net.Conn // under c, for Close's deadline
	max int

	rmu  sync.Mutex
	rerr error // sticky

	closeOnce sync.Once
	closeErr  error
}

func newWebSocket(c *websocket.Conn, raw net.Conn, max int) *WebSocket {
	// The library's limit counts bytes read; ours is checked again on the
	// result so that the bound is exactly MaxMessage.
	c.SetReadLimit(int64(max))
	return &WebSocket{c: c, raw: raw, max: max}
}

func wsErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrWebSocket}, a...)...)
}

// ReadMessage returns the next data message (binary, or text as its UTF-8
// bytes). Pings are answered meanwhile. When the peer closes it returns an
// error wrapping ErrClosed and io.EOF; a peer that breaks RFC 6455 gets an
// error wrapping ErrWebSocket, one whose message is over the bound
// ErrFrameTooLarge. Errors are sticky.
func (ws *WebSocket) ReadMessage() ([]byte, error) {
	ws.rmu.Lock()
	defer ws.rmu.Unlock()
	if ws.rerr != nil {
		return nil, ws.rerr
	}
	_, msg, err := ws.c.Read(context.Background())
	if err == nil && len(msg) > ws.max {
		err = websocket.ErrMessageTooBig
	}
	if err != nil {
		ws.rerr = ws.readErr(err)
		return nil, ws.rerr
	}
	if msg == nil {
		msg = []byte{}
	}
	return msg, nil
}

// readErr sorts the library's read errors into this package's.
func (ws *WebSocket) readErr(err error) error {
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("%w: peer sent close %d: %w", ErrClosed, ce.Code, io.EOF)
	case errors.Is(err, websocket.ErrMessageTooBig):
		return fmt.Errorf("%w: websocket message over the bound of %d bytes", ErrFrameTooLarge, ws.max)
	case errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
		return err // the connection ended between frames
	case errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return wsErr("%w", err)
}

// WriteMessage sends b as one binary message (one unfragmented frame).
func (ws *WebSocket) WriteMessage(b []byte) error {
	if len(b) > ws.max {
		return fmt.Errorf("%w: websocket message of %d bytes, bound %d", ErrFrameTooLarge, len(b), ws.max)
	}
	return ws.c.Write(context.Background(), websocket.MessageBinary, b)
}

// Close sends a normal close frame and waits for the peer's, for at most
// closeWait, then closes the connection, which unblocks pending reads and
// writes.
func (ws *WebSocket) Close() error {
	ws.closeOnce.Do(func() {
		ws.raw.SetDeadline(time.Now().Add(closeWait))
		ws.closeErr = ws.c.Close(websocket.StatusNormalClosure, "")
		ws.raw.Close()
	})
	return ws.closeErr
}

// hijackTap records the connection the library takes over from an HTTP
// response, so that Close can bound the close handshake.
type hijackTap struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackTap) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be taken over")
	}
	c, brw, err := hj.Hijack()
	h.conn = c
	return c, brw, err
}

// AcceptWebSocket completes a WebSocket opening handshake on an HTTP
// request (the relay side) and takes over its connection. On a request
// that is not a valid upgrade it answers with an HTTP error (400, or 426
// for a wrong version) and returns an error wrapping ErrWebSocket.
//
// Any Origin is accepted, as the reference relay (npm ws) does: its
// clients include browser pages served from anywhere.
func AcceptWebSocket(w http.ResponseWriter, r *http.Request, opts WebSocketOptions) (*WebSocket, error) {
	tap := &hijackTap{ResponseWriter: w}
	c, err := websocket.Accept(tap, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, wsErr("opening handshake: %w", err)
	}
	tap.conn.SetDeadline(time.Time{}) // the HTTP server's timeouts end here
	return newWebSocket(c, tap.conn, opts.max()), nil
}

// DialWebSocket connects to a relay at rawURL (ws:// or wss://) and does
// the client's opening handshake. ctx bounds the dial and the handshake.
func DialWebSocket(ctx context.Context, rawURL string, opts WebSocketOptions) (*WebSocket, error) {
	var raw net.Conn
	var d net.Dialer
	tr := &http.Transport{
		// No proxy from the environment: the relay's address is the one
		// the user gave.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			raw = c
			return c, err
		},
		TLSClientConfig: opts.TLSConfig,
	}
	defer tr.CloseIdleConnections()
	c, _, err := websocket.Dial(ctx, rawURL, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		HTTPHeader:      opts.Header,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, wsErr("dialing %s: %w", rawURL, err)
	}
	return newWebSocket(c, raw, opts.max()), nil
}
