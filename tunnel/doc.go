// Package tunnel carries TCP connections between keytunnel peers: Expose
// serves a local TCP service to the peers that reach our key, Forward makes
// a remote peer's service reachable on a local port, and Pipe connects
// stdin/stdout to it (for ssh's ProxyCommand). With ExposeOptions.UDP and
// a UDPForwarder it carries a UDP service as flows (see UDP below).
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
// ErrRefused with the reason instead of a bare EOF. The client starts yamux
// right behind the preamble without waiting for the reply (the first
// connection's bytes go out in the same flight; a refusing server discards
// them), and the reply comes in front of the server's first frame: a first
// connection through a new session costs the dial and one round trip, as
// one through an established session costs one.
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
// # The interactive lane
//
// One peer connection is one reliable ordered stream: when a download
// through the tunnel loses a packet, every other connection's bytes wait
// for its retransmission (on an 80 ms link with 1 % loss, a 1-byte echo
// beside a download took 3.2 RTT at the median; over a peer connection of
// its own, 1.8). So a mux session gets a second peer connection, its
// interactive lane, and laneConn (lanes.go) sends each stream's frames on
// one of the two: a new stream's on the lane, a stream that has sent more
// than 64 KiB since it was last quiet on the first connection, back on the
// lane after a second without data. Each move is announced on the lane
// the stream leaves, and the receiver holds the stream's frames that
// overtook the announcement, so each stream's bytes stay in order.
//
// The server offers the lane in its OK reply ("lanes1=" and a 16-byte
// token in hex); once the session is up the client dials the key again,
// sends "\x00keytunnel/lan1\n" and the token, and the server joins that
// connection to the session with that token, if it comes from the
// session's own key, once. Until then, and for good when the second dial
// fails, the session runs on its one connection as before; older clients
// never dial it and older servers never offer it. If either connection
// fails the session ends, and the next connection dials a new one.
//
// # Streams of a mux2 session
//
// A client that needs to say what a stream is for (a UDP flow; later, one
// of several named services under one key) starts the session with
// preamble2, "\x00keytunnel/mux2\n", instead. The reply and yamux are as
// for mux1, but every stream then begins with a stream header, and the
// server answers each with a stream reply before anything else on it
// (udpwire.go has both byte by byte):
//
//	header  len u16le ‖ kind uint ‖ service string ‖ flags uint ‖
//	        [flow uint, kind 1 only] ‖ optional extensions
//	reply   status u8 (0 ok, 1 refused) ‖ len u8 ‖ reason[len]
//
// (uint and string in compact-encoding). Kinds are 0 for a TCP stream and
// 1 for a UDP flow; the service name is empty for the key's default
// service, or names one of several (below). Unknown kinds, names and flag
// bits are refused, each with a reason the client logs. An extension that a server may ignore goes after the known
// fields; one it must understand sets a flag bit. The client does not wait
// for the reply before sending, so a stream still costs no round trip.
// Clients send mux2 only when they need it: a TCP forward keeps sending
// mux1, which every keytunnel server understands, and a server accepts
// both. A mux1 client of a UDP service is refused at the preamble ("use
// --udp").
//
// # Several services under one key
//
// An Exposer with ExposeOptions.Services serves several targets, each
// under a name (1 to 63 bytes of a-z, 0-9, '-', '_', '.'), TCP or UDP,
// with an allow list of its own. One is the default: the target given
// to NewExposer (its name is empty), or else the first named one. The
// rule on the wire adds nothing to mux2:
//
//   - a mux2 stream header's service field names the service; empty is
//     the default. Its kind must match the service's (0 for TCP, 1 for a
//     UDP service's flows);
//   - mux1 sessions and raw peers (hypertele, holesail) reach the
//     default service, as they reach a one-service key;
//   - an unknown name gets the refusal reply `no service "db" behind
//     this key (it serves: web, ssh)`, a kind that does not match the
//     service `service "dns" behind this key is UDP; forward it with
//     --udp`, and a key its service's list lacks `key K is not in the
//     allow list of service "ssh"`.
//
// A client asks for a named service (ForwardOptions.Service,
// Client.OpenService) with a mux2 session, whose streams all name it; a client of the default service
// keeps sending mux1, so nothing changes for it, and an older server
// refuses a named stream with its own reason.
//
// # UDP
//
// Forward with a UDPForwarder and Expose with ExposeOptions.UDP carry a
// UDP service. Each client address and port of the forward's local socket
// is a flow; on the exposing side each flow gets a UDP socket of its own
// towards the target, so the target's replies reach that flow's client
// alone. Between keytunnel peers a flow is a yamux stream of a mux2
// session, its header carrying a flow id (chosen by the client, unique
// in the session), and each datagram travels one of two ways:
//
//   - as one secret-stream datagram (an unreliable udx MESSAGE, what
//     @hyperswarm/secret-stream's send/trySend use) whose plaintext is
//     type u8 (1) ‖ flow id uint ‖ payload, when the peer connection
//     carries datagrams (a hyperdht connection, direct or through a blind
//     relay; not a dht-relay stream), the sender knows the other side has
//     the flow (the client once the flow's reply said ok; the exposing
//     side always), and the sealed datagram fits the path: payload + flow
//     tag (2-6 bytes) + 24 bytes of envelope <= the udx stream's
//     MaxMessage, its path MTU (1200 bytes until probing raises it, up to
//     1500) less 48 bytes of IPv4, UDP and udx headers (68 over IPv6), so
//     over IPv4 at first 1122-1126 bytes of payload and at most
//     1422-1426;
//   - else framed on the flow's stream: len u16le ‖ payload. This carries
//     a flow's first datagrams (before the reply), datagrams larger than
//     the path allows (up to 65535 bytes), and everything over paths
//     without datagrams. Framed datagrams are stream data, whose packets
//     also probe the path MTU up, so a flow of 1200-byte datagrams moves
//     to the datagram channel after a few hundred of them.
//
// Nothing is retransmitted or reordered by keytunnel: a datagram lost on
// the path is lost, as UDP is; one that finds its flow's queue to the
// stream full (256 datagrams) or udx's send queue full is dropped; framed
// and unframed datagrams of a flow may overtake each other. A flow ends
// when it has carried no datagram either way for FlowOptions.IdleTimeout
// (default 60 s; each side expires its end, and closing the stream ends
// the other's), and the next datagram from its client starts a new one.
// FlowOptions.MaxFlows (default 1024) caps a forward's flows (a new
// client's datagrams are dropped, logged once a second) and an expose's
// (the flow is refused with a reason); flows are streams too, within the
// Budget.
//
// In raw mode (ForwardOptions.Raw; and any raw peer of a UDP Expose) UDP
// speaks holesail's framing: one peer connection per client address,
// each datagram len u32be ‖ payload on it, reliably, as holesail-client
// (createUdpFramedProxy) and holesail-server --udp (pipeUdpFramedServer)
// do, so holesail's UDP peers and keytunnel interoperate both ways. A
// holesail frame starts with a zero byte and then, for any datagram under
// 16 MiB, another, so Expose tells it from a preamble at the second byte.
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
// paths worse than that. A silent connection from a key whose session
// waits for its interactive lane (below), or ended less than 10 s ago
// without one, is given the lane's own wait (10 s) instead, so a late
// lane never passes for a raw peer.
//
// # Access control
//
// Expose refuses peers whose key is not in ExposeOptions.Allow: a mux
// client gets a refusal reply (ErrRefused on its side), a raw client a
// closed connection, the server logs a warning, and the target never sees a
// connection. The DHT listener's firewall should call the same
// AllowList.Allows, so that strangers are rejected during the handshake,
// before this package sees them. With several services, each has its own
// list: a mux1 or raw peer is checked against the default service's, a
// mux2 session against the union of all (SessionAllow, nil when any
// service is open to everyone, which is what the firewall should use),
// and each of its streams against its own service's list, refused with
// a stream reply that says so.
//
// # Close semantics and backpressure
//
// Each direction of a tunnelled connection is copied with a pooled 32 KiB
// buffer (128 KiB while a bulk transfer fills it). EOF in one direction is passed on as a half-close (TCP
// CloseWrite, yamux stream FIN, PeerConn CloseWrite), so a client that
// sends a request and shuts its write side still gets the whole response;
// both sides are closed when both directions are done or either fails.
// Nothing in this package buffers beyond that: a slow reader fills the
// yamux stream window (256 KiB on an Exposer, 4 MiB on a Forwarder, which
// receives downloads; growing to 16 MiB, a few times a long fast path's
// bandwidth-delay product, while the reader keeps up and the memory budget
// has room: an Exposer's Budget, or a Forwarder session's own 64 MiB), and
// then the sender's Write blocks, back to the TCP connection that feeds
// it.
//
// Streams share their session's one peer connection in turn: a send gate
// (gate.go) lets a stream's large writes into yamux only while less than
// two frames (32 KiB) of data wait for the connection, and small writes
// (4 KiB or less) always, so that an interactive connection's keystrokes
// or requests wait behind at most that much of a bulk transfer in the
// same tunnel, plus udx's own queue of 2 ms of its pacing rate, rather
// than behind yamux's 64-frame queue.
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
// connections at once too. A UDPForwarder's session is kept by the same
// code (keeper, forward.go), a new flow standing for a new connection: a
// flow of an unreachable peer is dropped at once, and the client's next
// datagram starts a new one.
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
// 15 + 45 = 60 s, and a Forwarder then redials. New connections do not
// wait that long: a session that has heard nothing from its peer for
// longer than the peer's keepalive allows (quietLimit, 7 s) is pinged
// before it gets a new stream, and with no answer within a few round
// trips the connection waits for a fresh dial instead, which reaches a
// peer restarted on the same key at once; the old session keeps its open
// streams in case its path comes back.
//
// When one side's NAT mapping or address changes mid-session (conntrack
// flushed, a phone moving between networks), its next packets come from
// a new address. A packet there only makes the address a candidate; the
// other side's stream moves there once secret-stream has verified a
// message with bytes that came from it (udx.FirewallRoam and
// udx.Stream.Authenticated; udx's roam.go says why nothing less may move
// it). Meanwhile the candidate's data is acknowledged to it too, so a
// side that moved while sending completes its message, and a side that
// moved while only receiving notices its data stop (nothing new for
// max(2·RTT, 200 ms)) and sends a secret-stream keepalive at once
// (udx.Stream.OnReceiveStall), rather than its next one up to 5 s later.
// On the move, what went to the old address is resent. So no tunnelled
// connection is reset and the transfer carries on within a few hundred
// milliseconds, whichever side moved. A relayed session does not roam,
// and keeps libudx's 13 s stream timeout, the only way its ends learn
// that the relay died.
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
// `keytunnel status` and its metrics show. For UDP (Exposer with UDP,
// UDPForwarder.Stats) the connections are the flows and the bytes their
// datagrams' payload.
package tunnel
