package dhtrelay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keytunnel/keytunnel/internal/admit"
)

// Admission defaults: what a relay open to the internet lets connections
// cost before they are clients. A connection that has not completed its
// first exchange (the secret-stream handshake, or the WebSocket upgrade)
// is pending; a silent one holds a file descriptor and a goroutine for
// nothing, so pending connections are capped globally and per source,
// and their first bytes must come soon. A source is an IPv4 address or an
// IPv6 /64 (what one host usually has to itself).
const (
	DefaultMaxPending          = 128
	DefaultMaxPendingPerSource = 8
	DefaultMaxClientsPerSource = 32
	// DefaultFirstMessageTimeout bounds the wait for a new connection's
	// first bytes (a client speaks first on both transports).
	DefaultFirstMessageTimeout = 3 * time.Second
)

// admitPending counts a new connection as pending, or says why not: the
// pending caps, or the client cap (pending connections count towards it,
// so that it holds before any handshake work is done).
func (s *Server) admitPending(src netip.Prefix) error {
	if s.pending.Count()+s.Clients() >= s.opts.MaxClients {
		return errTooManyClients
	}
	if !s.pending.Acquire(src, s.opts.MaxPending, s.opts.MaxPendingPerSource) {
		return errTooManyPending
	}
	return nil
}

var (
	errTooManyPending = errors.New("too many connections still in their handshake")
	errTooManyClients = errors.New("too many clients")
)

// acceptRetrying is Accept that survives what a loaded server meets, as
// net/http's Serve does: when accepting fails (out of file descriptors,
// a connection aborted before accept), it waits 5 ms, doubling to 1 s,
// and tries again, so that the relay serves again once descriptors are
// free instead of exiting. It returns only when l is closed or ctx ends.
func acceptRetrying(ctx context.Context, l net.Listener, log *slog.Logger) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		log.Warn("dhtrelay: accept failed; retrying", "err", err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
	}
}

// firstMessageConn clears the first-message read deadline once the first
// bytes arrive; the rest of the handshake is bounded by TransportTimeout.
type firstMessageConn struct {
	net.Conn
	waiting atomic.Bool
}

func withFirstMessageTimeout(c net.Conn, d time.Duration) *firstMessageConn {
	fc := &firstMessageConn{Conn: c}
	fc.waiting.Store(true)
	c.SetReadDeadline(time.Now().Add(d))
	return fc
}

func (c *firstMessageConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.waiting.CompareAndSwap(true, false) {
		c.Conn.SetReadDeadline(time.Time{})
	}
	return n, err
}

// CloseWrite keeps the half-close secret-stream uses.
func (c *firstMessageConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ServeWebSocket serves WebSocket clients (the reference's bin.js
// transport) on l until l or the server closes, with the same admission
// as Serve: the request must arrive within FirstMessageTimeout,
// connections not yet upgraded are capped in total and per source, and
// accept errors are retried (net/http does). It closes l.
func (s *Server) ServeWebSocket(l net.Listener) error {
	var pending sync.Map // net.Conn → netip.Prefix, for connections counted as pending
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.opts.FirstMessageTimeout,
		IdleTimeout:       s.opts.FirstMessageTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState: func(c net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				src := admit.Source(c.RemoteAddr().String())
				if err := s.admitPending(src); err != nil {
					s.log.Debug("dhtrelay: connection refused", "remote", c.RemoteAddr(), "err", err)
					c.Close()
					return
				}
				pending.Store(c, src)
			case http.StateHijacked, http.StateClosed:
				if src, ok := pending.LoadAndDelete(c); ok {
					s.pending.Release(src.(netip.Prefix))
				}
			}
		},
	}
	stop := context.AfterFunc(s.ctx, func() { hs.Close() })
	defer stop()
	err := hs.Serve(l)
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	return err
}
