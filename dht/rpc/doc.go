// Package rpc is dht-rpc 6.27.0 in Go: the UDP request/response layer,
// Kademlia routing table and iterative lookups that HyperDHT runs on. On
// the wire a node of this package cannot be told from a Node.js dht-rpc
// node; the interop tests run both in one network.
//
// # Wire format
//
// Every message is one datagram. Byte 0 is 0x03 for a REQUEST and 0x13 for
// a RESPONSE; see RequestMessage and ResponseMessage for the field layout,
// AppendRequest/AppendResponse for the encoders and
// DecodeRequest/DecodeResponse for the bounds-checked decoders. Node ids
// are BLAKE2b-256 of the node's 6-byte public ipv4Address (NodeID); tokens
// are BLAKE2b-256 of the requester's host text keyed with one of two
// secrets rotated every 7.5 s.
//
// # Nodes
//
// New starts a DHT on caller-owned sockets (Config.Conn, the server
// socket, and optionally Config.ClientConn; the node never binds or closes
// sockets, and any PacketConn works, so a udx demultiplexer can share the
// UDP socket). It bootstraps from Config.Bootstrap: a background FIND_NODE
// for its own id, a quick PING_NAT probe, the firewall check, and, if the
// node turned out reachable, a second lookup under its address-derived id.
// Unlike the reference, the join does not wait out every retry to a dead
// bootstrap node: once some node answered and only requests that missed an
// attempt remain, the lookup ends (about 1 s with one dead node instead of
// ~20 s), and bootstrap nodes that stayed quiet are left out of later
// queries' seeds and firewall checks until they answer one.
//
// The node answers the internal commands PING, PING_NAT, FIND_NODE,
// DOWN_HINT and DELAYED_PING itself and hands every other command to
// Config.Handler (hyperdht's commands), which answers with Request.Reply,
// Request.Error or forwards with Request.Relay. Outgoing traffic:
// DHT.Request (one request, up to 4 transmissions 1 s apart), DHT.Ping,
// DHT.PingNAT, and the iterative DHT.Query / DHT.FindNode with the
// reference's concurrency (10, 2 for background lookups), LIFO visiting
// order, slow-request accounting, DOWN_HINT gossip and the optional commit
// phase (QueryOptions.Commit / AutoCommit).
//
// Nodes start ephemeral (they send no id and are not added to routing
// tables) and firewalled (they send from the client socket). NAT samples
// from the `to` field of messages give the public address (Snapshot.Host,
// Port; port 0 when the NAT randomises ports); the firewall check asks up
// to five nodes to PING_NAT the server socket. Mode Persistent turns the
// node persistent as soon as that succeeds; Adaptive (the default) after
// ~20 minutes of stability; Config.Bootstrapper makes a bootstrap node.
//
// # Concurrency
//
// One loop goroutine owns all protocol state; reader goroutines feed it
// datagrams, and the exported methods post closures to it. Protocol code
// takes the time as an argument; only the loop reads the clock. Handlers
// and Config.Events run on the loop and must not block. Close cancels
// everything in flight and waits for every goroutine the node started.
//
// # Differences from the reference
//
// Incoming requests are rate limited per source (an IPv4 address or IPv6
// /64, whatever the port; see Source) (default 100/s,
// burst 200), which the reference does not do. Bootstrap hostnames are
// resolved once at start. Network-health tracking (online/degraded) and
// suspend/resume are not implemented. A response tid that collides with an
// in-flight one is avoided by skipping busy tids.
package rpc
