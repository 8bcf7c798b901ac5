// Package blindrelay is a wire-compatible Go implementation of blind-relay
// 1.6.1, the relay fallback of the HyperDHT stack: when two peers cannot
// hole-punch, both connect to a third node (the relay) and ask it, over a
// protomux channel "blind-relay", to pair them by a shared token. The relay
// then forwards their UDX packets between two streams of its own, with only
// the stream id rewritten. The peers run their end-to-end secret-stream
// over that path, so the relay never sees plaintext: it is blind.
//
// Sheet: protocol/blind-relay.md; where it and the Node source differ, the
// source was followed.
//
// # Wire format
//
// The channel is protomux protocol "blind-relay" with id = the client's
// public key (the relay accepts it with the connection's remote public
// key), no handshake. Two messages, in addMessage order:
//
//	type 0 pair    flags(bitfield 7: bit0 isInitiator) token(fixed32) uint(id) uint(seq)
//	type 1 unpair  flags(bitfield 7, 0) token(fixed32)
//
// Pair and Unpair document the bytes; the codecs are checked against the
// reference's own by interop/blindrelay-vectors.js.
//
// # Flow
//
//  1. Peers A (initiator) and B share a random Token out of band.
//  2. Each sends pair{isInitiator, token, id: its own raw stream id, seq 0}.
//  3. With one initiator and one non-initiator request for the token (on
//     any sessions), the Server creates two UDX streams, makes each relay
//     to the other (udx.Stream.RelayTo: packets are forwarded by the UDX
//     loop, never copied through user space), and answers each peer with
//     pair{its role, token, id: the relay stream allocated for it}.
//  4. Each relay stream connects, on its first incoming packet (firewall),
//     to the requester's stream id at that packet's source.
//  5. Each peer connects its raw stream to (the relay's id, the relay's
//     address) on the socket of its relay connection and starts its
//     secret-stream.
//
// unpair cancels a pending pairing or tears down a matched one; closing a
// session's channel does both for everything the session holds.
//
// # Differences from the reference
//
// The reference bounds nothing. Server caps sessions globally and per
// source address (IPv4 address, IPv6 /64), closes sessions that send no
// pair request soon after opening, bounds pending pairings globally and
// per session, bounds active pairs, expires pending pairings, and tears
// down pairs that stay idle; refused requests are reported (OnError,
// Stats) since the protocol has no error reply. Only a session that holds
// a slot of a pending pairing may unpair it. A pair id above 2^32-1 is
// refused instead of being truncated. Optionally (AcceptOptions.RemoteAddr)
// relay streams accept their first packet only from the session's address.
//
// # Concurrency
//
// Message handlers run on the protomux dispatcher of each connection. A
// Client owns no goroutine. A Server owns a janitor and one goroutine per
// relayed pair; Close stops and waits for them. Sockets are never bound
// here: the caller supplies the Mux and the UDX instance (Streams).
package blindrelay
