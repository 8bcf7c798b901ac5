// Package protomux is a wire-compatible Go implementation of protomux
// 3.12.1 (the Node multiplexer hyperdht, blind-relay and dht-relay run
// their protocols over). Sheet: protocol/protomux.md; where it and the
// Node source differ, the source was followed.
//
// # Transport
//
// A Mux runs over a Framed duplex: each WriteMessage arrives as exactly
// one ReadMessage. Over secret-stream one protomux frame is one
// secret-stream message (SecretStream adapts a *secretstream.Conn through
// its ReadMessage/WriteMessage). Pipe is an in-memory Framed for tests.
//
// # Wire format (all integers are compact-encoding uints: one byte below
// 0xfd, else fd+u16le, fe+u32le, ff+u64le)
//
//	frame   = uint(channel) uint(type) body        (empty frames ignored)
//
// channel ≥ 1 is the SENDER's local id for a channel (index+1 in its
// table; freed ids are reused, last freed first); type is the message's
// index in AddMessage order; body is the rest of the frame, encoded by the
// message's Codec. channel = 0 is the control channel:
//
//	00 00 BATCH  uint(ch) { uint(len>0) entry[len] | 00 uint(ch') }*
//	00 01 OPEN   uint(localID) string(protocol) optionalBuffer(id) [handshake]
//	00 02 REJECT uint(id the peer used in its OPEN)
//	00 03 CLOSE  uint(localID)
//
// string and optionalBuffer are uint(len) ‖ bytes; optionalBuffer's 00
// means "no id". A BATCH entry is "uint(type) body" for the current
// channel; control messages appear on channel 0 without their leading 00.
// An entry length past the end of the frame is cut to the end (as Node
// does). Examples:
//
//	OPEN "blind-relay", id 11×32, local id 1:  00 01 01 0b 626c…79 20 11…11
//	OPEN "@hyperswarm/dht-relay", no id:       00 01 01 15 40…79 00
//	corked open("x") + uint 5, 6 on channel 1: 00 00 00 | 05 01 01 01 78 00 | 00 01 | 02 00 05 | 02 00 06
//
// # Semantics
//
// A channel is identified by (protocol, id). Open sends OPEN; the channel
// pairs when the peer's OPEN for the same key arrives (or had arrived).
// An OPEN from the peer that no local channel waits for goes to the
// PairFunc registered with Pair (on its own goroutine); if no matching
// channel is opened by the time it returns — or if none is registered —
// the open is REJECTed. Messages for such a not-yet-accepted channel are
// buffered, each counted as 512 + length; above 32 KiB the Mux stops
// reading until they drain. Messages for unknown or closed channels and
// unknown types are ignored. A local id is reused only after the peer has
// acknowledged it (its OPEN or REJECT for it arrived).
//
// Any decode error (frame, control body, channel message codec), an OPEN
// that does not use the next or a free remote id, or a REJECT for an id
// not waiting, destroys the Mux with an error wrapping ErrBadFrame,
// ErrBadMessage, ErrInvalidOpen or ErrInvalidReject.
//
// While corked, frames are gathered into one BATCH frame, cut at 8 MiB.
// When a received BATCH holds several messages the Mux corks its replies
// until their handlers and the pair functions they started have returned.
//
// # Differences from the Node module
//
//   - An OPEN for channel id 0 is ignored (Node sends a malformed REJECT).
//   - A CLOSE for a channel the peer opened and this side has not accepted
//     yet is answered with REJECT at once (Node leaves it queued).
//   - Unanswered peer opens are bounded (Options.MaxBacklog), nested
//     BATCH frames are limited to depth 8, and the write queue is bounded
//     (Options.MaxWriteQueue); Node bounds none of these.
//   - Callbacks are synchronous; PairFunc is the asynchronous notify.
//
// # Concurrency
//
// A Mux owns a reader, a dispatcher and a writer goroutine. All callbacks
// run on the dispatcher, serially. Sends never block: they queue frames
// for the writer (Flush waits for the queue). Close destroys the Mux and
// waits for every goroutine, including running PairFuncs, whose ctx is
// cancelled.
package protomux
