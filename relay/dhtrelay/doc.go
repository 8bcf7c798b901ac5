// Package dhtrelay implements the wire protocol of @hyperswarm/dht-relay
// 0.4.3: a HyperDHT node relayed to a client that cannot use UDP (a
// browser, a network that blocks UDP), over TCP or WebSocket.
//
// Sheet: protocol/dht-relay.md. Where it and the Node source differ, the
// source (lib/messages.js, lib/codecs.js, lib/protocol.js, lib/node.js,
// lib/node-proxy.js) was followed.
//
// # Layers
//
//	transport  TCP: secret-stream (Noise XX, random keys, u24 frames)  → TCP
//	           WebSocket: one binary message per frame (RFC 6455 by
//	           github.com/coder/websocket)                            → WebSocket
//	protomux   one channel "@hyperswarm/dht-relay", no id, no handshake,
//	           opened by both sides at once                           → NewChannel
//	messages   28 types, ids 0–27 in addMessage order                  → Message, DecodeMessage
//	session    which alias means which stream, server, query, request → Session
//
// Both transports deliver whole protomux frames; neither adds a length
// prefix of its own (secret-stream's u24 length is its encryption frame).
// Every received frame is bounded: secret-stream by its MaxFrameSize
// before it is allocated, WebSocket by MaxMessage as its bytes arrive
// (both DefaultMaxFrame, 16 MiB, by default); the reference bounds
// neither beyond its transport.
//
// A frame is "uint(channel) uint(type) body"; see AppendFrame. Message
// bodies are compact-encoding (the 2.x line the reference pins: an empty
// buffer decodes as null, arrays stop at 2^20 elements) with two local
// conventions: aliases and ids are fixed uint32 little-endian, and several
// bodies start with a raw flag byte. Each message type documents its body
// byte by byte.
//
// # Who is who
//
// The relay side is a full DHT node (our dht package, or Node's hyperdht)
// acting for its clients; the client side has only the relay channel.
// Mapping the messages onto the two:
//
//	client API            client → relay          relay → client
//	Dial(remotePK)        connect{A}              [noiseSend/noiseReceive…] open{R, A} | destroy{unpaired, A}
//	stream I/O            data{A}, end{A},        data{R}, end{R}, destroy{paired, R}
//	                      destroy{paired, A}
//	Listen(keyPair)       listen{S}               [signAnnounce{signee S}…] listening{S′, S, addr}
//	inbound connection    connected{C′, C}        [incoming{I, S′} | noiseReceive{H, S′}…] connection{C, S′, hash|H}
//	stop listening        close{S}                closed{S′}
//	Lookup(topic)         lookup{Q}               result{Q, announcers}…, finished{Q}
//	Announce/Unannounce   announce{Q} / unannounce{Q}  [signAnnounce|signUnannounce{signee Q}…] result…, finished{Q}
//	heartbeat             pong                    ping (every 15 s; 45 s silence kills the transport)
//
// Every message carries the sender's own alias of an object; fields named
// remote… carry the receiver's. The client numbers streams, servers and
// queries; the relay numbers its stream and server aliases and its
// requests (handshake ids H, firewall questions I, signature requests).
// Session keeps both numberings and resolves them; the reference keeps
// one process-wide counter per side, Session.NextID keeps one per session
// and skips values still in use after it wraps.
//
// A Go relay serving Node clients runs, per client: Receive(handshake),
// then for each connect a dht dial with the client's key pair, for each
// listen a dht server, for each lookup/announce a query, answering with
// the messages in the right-hand column. A Go client talking to a Node
// relay does the mirror image. Both must tolerate the reference's
// silences: it ignores messages for unknown aliases, and Session reports
// them (ErrUnknownAlias) without changing state so the caller can do the
// same.
//
// # Runtime
//
// Server relays a *dht.Node (ServeTCP/Serve for the TCP transport,
// ServeHTTP for WebSocket, ServeFramed for any Framed): per client a
// Session, a Dial per connect, a Listener per listen (firewall questions
// go to the client as incoming), a query per lookup/announce/unannounce.
// Each client is bounded by Limits (streams, servers, queries, pending
// requests), its write queue (ServerOptions.WriteQueue: a client that does
// not read stalls its streams, and through udx flow control their peers)
// and per-stream buffers; the heartbeat pings every 15 s and drops a
// client silent for 45 s (armed from the start, unlike the reference).
// It serves both modes. For a non-custodial client it gives the dht
// package hooks instead of keys: a dht.Handshaker per handshake
// (Node.DialRaw for connect, ListenOptions.Handshakes for listen) whose
// WriteMessage and ReadMessage are noiseSend and noiseReceive to the
// client, and a dht.Signer (ListenOptions.Signer, AnnounceOptions.Signer,
// Node.UnannounceSigned) whose signatures come from signAnnounce and
// signUnannounce and are verified before use. The dht then hands over the
// udx stream itself (a dht.RawConn), and data messages carry the client's
// secret-stream bytes unchanged. The relay waits at most 10 s for each
// answer (the reference waits forever) and forgets the request after.
//
// Client is the relayed side with the UDP node's API shape (Dial, Listen,
// Lookup, Announce, Unannounce) over one Framed; DialClient reaches a
// relay at tcp://, ws:// or wss://. It runs both modes: non-custodial it
// does the IK handshakes and signatures itself and wraps each stream in
// its own secret-stream (tested against the Go and the Node relay, which
// then never receive the secret key).
//
// # Custodial and non-custodial keys
//
// Custodial (the reference's default): the client sends its Ed25519
// secret keys in handshake, connect, listen and announce. The relay does
// the Noise handshakes and signs records itself, and data messages carry
// the application's plaintext. The relay can impersonate the client
// forever after; only use it with a relay you run yourself.
//
// Non-custodial: secret keys never leave the client (the messages carry
// the flag clear and no secret key field at all). Instead:
//
//   - Noise: the relay's DHT code runs the hyperdht IK handshake against
//     a proxy. Each step becomes noiseSend (produce the next message with
//     this noisePayload) or noiseReceive (here is the peer's message); the
//     client runs the real Noise state and answers noiseReply. The final
//     reply carries remoteId and holepunchSecret, which the relay needs to
//     hole-punch; the transport keys tx/rx and the handshake hash stay with
//     the client. open/connection then name the handshake by id, and the
//     client runs secret-stream over the relayed bytes itself: data
//     messages carry ciphertext the relay cannot read.
//   - Records: hyperdht asks the relay to sign each announce/unannounce;
//     the relay sends signAnnounce/signUnannounce (token, the storing
//     node's id, relay addresses) and waits for the client's signature,
//     computed over NS_ANNOUNCE|NS_UNANNOUNCE ‖ BLAKE2b(target ‖ peerId ‖
//     token ‖ peer{publicKey, relayAddresses}) (see AppendPeer).
//   - Firewall: a non-custodial server's firewall runs inside the
//     client's Noise responder (an empty noiseReply payload denies);
//     custodial servers get incoming and answer accept/deny.
//
// What works non-custodially, both directions (interop tests): Go and
// Node clients through a Go relay dial Go and Node servers, listen for Go
// and Node UDP clients, and announce and unannounce; a Go client through
// a Node relay dials, but cannot listen or announce there (next
// paragraph): the Node relay confirms such a listen all the same, so a
// non-custodial Listen looks its own key up before it returns and fails
// with ErrNotAnnounced when no DHT node holds the announce. In every case the relay never receives a secret key or
// plaintext (TestNonCustodialRelayNeverSeesSecrets,
// TestInteropNodeNonCustodialSecret, TestInteropGoClientNodeRelay).
//
// Quirks of the reference a Go peer must know (all in the sheet, §6): its
// non-custodial relay puts the peer object where relayAddresses belong and
// fails to encode signAnnounce, so non-custodial listens and announces
// never complete against a Node relay; a Go relay sends
// ann.peer.relayAddresses, which Node clients sign correctly. Its
// ServerProxy sends destroy without paired/remoteAlias, which throws; a
// Go relay sends destroy{paired, C}. The client's Handshake computes
// remoteId as the initiator's stream id on both sides.
//
// # Admission
//
// A relay open to the internet meets connections that never speak. Serve
// and ServeWebSocket count a connection as pending until its first
// exchange (secret-stream handshake, WebSocket upgrade) is done, cap
// pending connections in total and per source (an IPv4 address or IPv6
// /64) and close the excess at once, before any handshake work; the first
// bytes must come within FirstMessageTimeout. Clients are capped in total
// (pending ones count, so the cap holds before the handshake) and per
// source. A failed Accept, such as EMFILE, is retried with a backoff, as
// net/http does, instead of ending Serve. See admit.go.
package dhtrelay
