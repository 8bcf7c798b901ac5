// Package tunnel carries TCP connections between keytunnel peers: Expose
// serves a local TCP service to the peers that reach our key, Forward makes
// a remote peer's service reachable on a local port, and Pipe connects
// stdin/stdout to it (for ssh's ProxyCommand).
//
// The package knows nothing about the DHT. It needs a Dialer (reach the
// peer behind a public key) and a PeerListener (accept peers on our key
// pair), both giving PeerConns: encrypted, half-closable net.Conns that know
// the remote's public key. Tests use loopback TCP pairs with fake keys.
//
// # Two modes on the wire
//
// Mux (keytunnel to keytunnel): one peer connection carries every TCP
// connection as a yamux stream (libp2p/go-yamux), so opening a connection through
// an established tunnel costs one yamux frame, not a DHT lookup and hole
// punch. The client starts the peer connection with a 16-byte preamble
// ("\x00keytunnel/mux1\n"); the server answers with a short reply (ok, or
// refused with a reason) before yamux starts, so that a refused client gets
// ErrRefused with the reason instead of a bare EOF. That costs one round
// trip per peer session; streams cost none.
//
// Raw (hypertele, holesail): one peer connection per TCP connection, bytes
// unframed. Forward with ForwardOptions.Raw speaks it to raw servers.
//
// Probe (keytunnel doctor, Check): "\x00keytunnel/prb1\n" opens a
// connection that measures the path and never reaches the target (see
// probe.go). A server that serves it says so in its OK reply to the mux
// preamble (reason "probe1", which older clients ignore); clients send it
// only then, since an older server would take it for a raw client.
//
// # How Expose tells the modes apart
//
// The client speaks first in mux mode, so Expose reads a peer's first bytes
// before anything else:
//
//   - all 16 bytes equal the preamble: mux (the probe preamble: probe);
//   - a byte differs from the preamble, or the peer half-closes first: raw,
//     and the bytes read so far are replayed into the target connection;
//   - nothing (or only a prefix of the preamble) within DetectTimeout
//     (default 400 ms; on a path whose transport measures its RTT, as a
//     secret stream over udx does, at least three smoothed RTTs and
//     200 ms): raw. This is for raw clients of protocols in which
//     the server speaks first (SMTP, MySQL, SSH banners): the target is
//     connected only then, and its banner reaches the client.
//
// The cost: raw clients of server-speaks-first services see the banner
// DetectTimeout late, once per connection; other raw clients (HTTP and any
// protocol whose client talks first) lose nothing, because their first
// byte decides at once; mux clients lose nothing.
//
// A keytunnel client whose preamble arrives after DetectTimeout (a slow
// path) is not lost in the common case: once the target is connected,
// whichever of peer and target speaks first decides. If it is the peer and
// its bytes are the preamble, the target (which has only seen a connection
// open) is closed and the peer gets its mux session. Only if the target
// spoke first (a server-speaks-first service) is the late client taken for
// raw: it then gets ErrProtocol instead of a session. 400 ms is well above
// one-way delays of working paths, and the wait grows with the measured
// RTT of slow ones (a preamble lost once on a lossy or relayed path
// arrives a retransmission late); raise ExposeOptions.DetectTimeout for
// paths worse than that.
//
// # Access control
//
// Expose refuses peers whose key is not in ExposeOptions.Allow: a mux
// client gets a refusal reply (ErrRefused on its side), a raw client a
// closed connection, the server logs a warning, and the target never sees a
// connection. The DHT listener's firewall should call the same
// AllowList.Allows, so that strangers are rejected during the handshake,
// before this package sees them.
//
// # Close semantics and backpressure
//
// Each direction of a tunnelled connection is copied with a pooled 32 KiB
// buffer. EOF in one direction is passed on as a half-close (TCP
// CloseWrite, yamux stream FIN, PeerConn CloseWrite), so a client that
// sends a request and shuts its write side still gets the whole response;
// both sides are closed when both directions are done or either fails.
// Nothing in this package buffers beyond that: a slow reader fills the
// yamux stream window (256 KiB, growing to 16 MiB, a few times a long
// fast path's bandwidth-delay product, while the reader keeps up and the
// memory budget has room: an Exposer's Budget, or a Forwarder session's
// own 64 MiB), and then the sender's Write blocks, back to the TCP
// connection that feeds it.
//
// # Budgets
//
// Anyone who learns an exposed key can connect, so an Exposer caps what
// peers may take (Budget, after libp2p's resource manager and quic-go's
// stream limits): concurrent peer sessions, streams per session and in
// total, and the memory of stream windows across all sessions. Windows
// grow past yamux's initial 256 KiB only while the memory budget has room
// and the session holds less than a quarter of it, so with many streams
// open new windows stay small, and one greedy peer leaves room for the
// others. Over a cap, the new session is refused (a reason for keytunnel
// clients) or the new stream reset; what is already open goes on, and a
// log line and a refused Event name the peer. The multiplexer is
// libp2p/go-yamux, which speaks hashicorp/yamux's protocol and adds the
// memory manager, stream caps and resets this needs.
//
// # Reconnection
//
// A Forwarder dials lazily and keeps one session. When it dies, the local
// port stays open; the next local connection dials at once, and
// connections that arrive meanwhile wait for that dial (up to WaitTimeout).
// Once the peer is known to be unreachable (the Dialer's error is
// ErrUnreachable, as for a key no DHT node holds, or two dials in a row
// failed) the connections waiting fail at once with the dial's error,
// rather than being held; one other failure may be a lost packet, and the
// connections wait for one more dial after a short backoff. After a
// failed dial a backoff runs (exponential with jitter, capped at
// BackoffMax, 5 s by default); while the peer is known to be unreachable,
// new connections during it fail at once without a dial, and the first
// connection after it dials again. So a peer that comes back is reached by
// the next connection after at most one backoff, and a client that keeps
// connecting costs at most one DHT lookup per backoff. Refusals fail
// connections at once too.
//
// # Bad links: roaming, darkness
//
// A session is one udx stream, and everything that keeps it alive is
// sized for a link that goes dark for 30 s and comes back:
//
//   - secret-stream sends an empty encrypted frame after 5 s without a
//     write (hyperdht's connectionKeepAlive), so an idle session keeps
//     its NAT mappings fresh and notices a new path;
//   - yamux pings every 15 s and ends the session when a ping, or a
//     frame waiting for the connection, gets nowhere in 45 s
//     (ConnectionWriteTimeout; yamux's own 10 s would end it first);
//   - the udx stream of a direct session retransmits an unacknowledged
//     packet every two RTOs for up to 45 s (dht.StreamTimeout; libudx
//     gives up after six RTOs, about 13 s).
//
// So tunnelled connections, idle or busy, survive up to about 40 s of
// darkness: the first retransmission after the link is back (at most two
// RTOs, 2 s on most paths) resumes the transfer, and nothing is delivered
// twice (udx drops duplicate packets, yamux and TCP above see one
// ordered stream). A peer that is gone for good is noticed within
// 15 + 45 = 60 s, and a Forwarder then redials.
//
// When the client's NAT mapping or address changes mid-session (conntrack
// flushed, a phone moving between networks), its next packet comes from
// a new address; the server's stream moves there once a packet from it
// fits the stream's state (udx.FirewallRoam, which says what that
// proves), so no tunnelled connection is reset and the transfer carries
// on within a round trip or two. A relayed session does not roam, and
// keeps libudx's 13 s stream timeout, the only way its ends learn that
// the relay died.
//
// # Lifetimes and events
//
// NewExposer and NewForwarder start their goroutines; Close is idempotent,
// stops them and waits for every connection they started. Expose and
// Forward are the blocking forms, bound to a context. Logs go to log/slog;
// OnEvent receives Events (connected, disconnected, refused, redialing)
// that marshal to JSON for a machine-readable mode, and Stats returns a
// snapshot of the counters (payload bytes each way, open and total
// connections, redials, live peers with their RTT and path) that
// `keytunnel status` and its metrics show.
package tunnel
