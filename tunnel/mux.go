package tunnel

import (
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// muxConfig is the yamux configuration of both ends. The stream window is
// the backpressure unit: a stream whose reader stalls holds at most that
// much in the receiver before the sender's Write blocks, and other
// streams on the session keep flowing.
func muxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	// yamux logs a line for every session that ends with a closed conn;
	// that is routine here, so it goes to debug.
	c.LogOutput = nil
	c.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	// Keepalives notice a session whose peer vanished without a close
	// (NAT mapping gone, laptop suspended), so that Forward redials instead
	// of opening streams into the void.
	c.KeepAliveInterval = 15 * time.Second
	// A half-closed stream whose peer never answers with FIN would
	// otherwise pin its buffers for yamux's default 5 minutes.
	c.StreamCloseTimeout = time.Minute
	// yamux's 256 KiB default window caps one stream at window/RTT, well
	// under what udx carries (98 vs 166 MB/s through a loopback tunnel).
	// 2 MiB is the per-stream bound on what a stalled reader leaves
	// buffered in the receiver.
	c.MaxStreamWindowSize = 2 << 20
	// yamux's open timeout starts a goroutine and a timer for every
	// stream until the peer's ACK, one more wake-up on the path of each
	// new connection. It guards against a peer that answers pings but
	// never ACKs a stream; an Exposer ACKs every stream it is given (or
	// resets it when its backlog is full), and keepalives catch a peer
	// that is gone.
	c.StreamOpenTimeout = 0
	return c
}

// keepAliveIfRemote turns TCP keepalive on (Go's defaults: probes after
// 15 s idle) for a TCP connection to another host. A tunnel's local legs,
// a client of a forward and an exposed target, are usually on the same
// host, where keepalive has no dead path to find but costs four
// setsockopt calls on the way of every new connection; so Expose dials and
// the keytunnel command listens without it, and this brings it back where
// it matters.
func keepAliveIfRemote(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	if a, ok := tc.RemoteAddr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		return
	}
	tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true})
}

// asConn gives join the half-close it needs. A net.Conn without CloseWrite
// (rare: TCP and Unix conns have it) gets a no-op, so an EOF in that
// direction simply waits for the other side to finish.
func asConn(c net.Conn) conn {
	if hc, ok := c.(conn); ok {
		return hc
	}
	return noHalfClose{c}
}

type noHalfClose struct{ net.Conn }

func (noHalfClose) CloseWrite() error { return nil }

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func loggerOr(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}
