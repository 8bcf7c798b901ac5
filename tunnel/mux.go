package tunnel

import (
	"log/slog"
	"net"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/libp2p/go-yamux/v5"
)

// muxConfig is the yamux configuration of both ends (libp2p/go-yamux,
// which speaks the same protocol as hashicorp/yamux and adds what a
// server facing strangers needs: a cap on incoming streams, stream resets,
// and receive windows that grow only as a MemoryManager allows; see
// Budget). The stream window is the backpressure unit: a stream whose
// reader stalls holds at most that much in the receiver before the
// sender's Write blocks, and other streams on the session keep flowing.
// maxWindow is the largest a stream's receive window grows: 3x the BDP
// of 100 ms at 400 Mbit/s.
const maxWindow = 16 << 20

// muxFrameSize is the largest yamux frame either end sends (muxConfig),
// and muxFrameBody the most data one carries: go-yamux splits a write at
// muxFrameBody bytes (MaxMessageSize less its header).
const (
	muxFrameSize = 16 << 10
	muxFrameBody = muxFrameSize - muxHeaderSize
)

func muxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	// yamux logs a line for every session that ends with a closed conn;
	// that is routine here, so it goes to debug.
	c.LogOutput = slog.NewLogLogger(log.Handler(), slog.LevelDebug).Writer()
	// Keepalives notice a session whose peer vanished without a close
	// (NAT mapping gone, laptop suspended), so that Forward redials instead
	// of opening streams into the void.
	c.KeepAliveInterval = 15 * time.Second
	// A keepalive ping waits this long for its answer, and a frame this
	// long for the connection to take it, before the session ends. yamux's
	// 10 s would end every tunnelled connection on a link that goes dark
	// for longer than that, though the stream under it (dht.StreamTimeout,
	// 45 s) would carry on; matched to it, a session outlives half a
	// minute of darkness, and a peer that vanished is noticed within
	// KeepAliveInterval + 45 s = 60 s.
	c.ConnectionWriteTimeout = dht.StreamTimeout
	// Windows start at yamux's 256 KiB and double (while the reader keeps
	// up within a few round trips) up to maxWindow: 256 KiB caps one stream
	// at window/RTT, well under what udx carries (98 vs 166 MB/s through a
	// loopback tunnel), and a window must cover a few times the path's
	// bandwidth-delay product, since udx's queue and its BBR STARTUP
	// overshoot sit inside it too: at 100 ms and 100 Mbit/s (1.25 MB BDP)
	// a 2 MiB window left the link part idle. A stalled reader never grows
	// its window, and growth past the initial window is granted only from
	// a memory budget (Budget on an Exposer, clientMemory on a Forwarder),
	// so many open streams keep small windows.
	c.InitialStreamWindowSize = initialWindow
	c.MaxStreamWindowSize = maxWindow
	// go-yamux queues frames in front of the connection in the order
	// streams wrote them; the send gate (gate.go) keeps that queue to two
	// frames, so a small write of one stream waits behind at most that
	// much of another's. 16 KiB frames (the default is 64 KiB) keep that
	// short, 2.6 ms at 100 Mbit/s, for some 20% more CPU per byte in the
	// sender.
	c.MaxMessageSize = muxFrameSize
	return c
}

// clientInitialWindow is the receive window a Forwarder's streams start
// with, which carries downloads: yamux's doubling (by half a window each
// time the reader drains one within four session RTTs) trails udx's BBR
// STARTUP, which then finds the bandwidth the window lets through rather
// than the path's and leaves STARTUP at a fraction of it; at 100 ms and
// 100 Mbit/s a stream starting at 256 KiB left STARTUP at 4.4 MB/s and
// took seconds of PROBE_BW to reach the link's 12.5 (a 6 s download
// averaged 5.1-6.6 MB/s; kernel BBR 10.0-10.3). From 4 MiB, which covers
// STARTUP's 2.89 BDP up to about 100 Mbit/s at 100 ms, it averaged 10.3.
// The window is counted in full against the session's memory
// (clientMemory), so growth past it still needs room there. An Exposer's
// streams start at yamux's 256 KiB, since a stranger can open many.
const clientInitialWindow = 4 << 20

// clientMuxConfig is muxConfig for a Forwarder's (or Client's) sessions.
func clientMuxConfig(log *slog.Logger) *yamux.Config {
	c := muxConfig(log)
	c.InitialStreamWindowSize = clientInitialWindow
	return c
}

// serverMuxConfig is muxConfig for an Exposer's sessions: streams over the
// session cap are reset by the accept loop, which logs them. yamux's own
// caps, which reset silently (logging at debug), are a backstop for a
// burst of SYNs the accept loop has not seen yet: its default backlog
// (256; a burst of 100 new connections under the race detector overflows
// 64), and the admitted streams plus that backlog. Streams waiting there
// hold initial windows, which count against the memory budget, so that a
// burst that overdraws it gets its streams refused when they are accepted.
func serverMuxConfig(log *slog.Logger, b Budget) *yamux.Config {
	c := muxConfig(log)
	c.MaxIncomingStreams = uint32(b.StreamsPerSession + c.AcceptBacklog)
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
