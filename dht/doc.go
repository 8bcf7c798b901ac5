// Package dht is a HyperDHT node (hyperdht 6.34.0) on top of package
// dht/rpc: a peer that a Node.js hyperdht network cannot tell from its own.
//
// A Node serves hyperdht's storage commands once dht-rpc has made it
// persistent: LOOKUP, ANNOUNCE and UNANNOUNCE (records per topic, signed for
// the storing node's id and token), FIND_PEER (self-announces, kept in the
// router table so that handshakes can be relayed to the server), MUTABLE_PUT
// and MUTABLE_GET (signed values with sequence numbers; a lower seq is
// refused with SEQ_TOO_LOW, a reused one with SEQ_REUSED) and IMMUTABLE_PUT
// and IMMUTABLE_GET (values stored under their hash). While ephemeral it
// declines them, and dht-rpc answers UNKNOWN_COMMAND with closer nodes, as
// the reference does. Messages, signatures and the record store (bounded
// the reference's way: maxSize entries in two generations rotated every
// ⅔ maxAge) are package dht/wire's; this package adds the network.
//
// The client side mirrors index.js: Lookup and FindPeer stream replies;
// Announce, MutablePut and ImmutablePut run a query and then commit to the
// closest nodes; MutableGet and ImmutableGet verify what they return.
//
// Testnet starts a local network the way testnet.js does, for tests and
// `keytunnel testnet`.
//
// # Floods
//
// A listener's key is public, so anyone can make it run handshakes. Fresh
// handshakes are limited per client source (an IPv4 address or IPv6 /64,
// whatever the port, loopback included): 50 a second after a burst of
// 100; the rest get silence before any key work. A handshake the firewall
// refuses frees its slot at once; its answer is remembered (up to 1024,
// for 10 s) so that repeats of the same first message, a client trying
// several relays, cost nothing. DHT requests are limited per source too
// (dht/rpc), except that loopback senders keep one limit per port.
//
// # One key, several processes
//
// DHT nodes route a key's handshakes to whichever process announced it
// last, and an UNANNOUNCE signed with the key removes the record whoever
// put it there. Probe tells a live holder (it answers a handshake made
// with the key itself) from a stale record (no answer within
// ProbeTimeout), so that a second server can refuse to start. A Listener
// checks its relays' record every 3 s (a FIND_PEER instead of
// hyperdht's ping) and re-announces at once when it is gone, and it
// probes before each periodic re-announce and for a minute after a
// handshake from its own key, staying quiet while another live process
// holds the key (ListenOptions.OnReplaced).
//
// # Concurrency
//
// Requests are handled on the rpc loop goroutine, which passes its time to
// the store; the store never reads the clock and locks itself, because
// client calls (Unannounce unlinks our own record first) touch it too.
//
// # Counters
//
// Node.Stats reports the node's health for `keytunnel status` and its
// metrics: the routing table, dht-rpc's traffic, listeners' handshakes by
// outcome, dials, holepunches and blind-relay fallbacks and upgrades.
// Node.PathOf says how a connection reaches its peer now. They are plain
// counters; exporting them is the caller's business.
//
// # Relaying handshakes
//
// Any node relays PEER_HANDSHAKE and PEER_HOLEPUNCH for a target it holds
// a router entry for (a server's self-announce, Node.Forward) to that
// server, and a server answers those for its own key (router.go), so Node
// clients and servers connect through Go nodes as through their own.
// Dial and Listen (api_connect.go) are hyperdht's connect and
// createServer.
package dht
