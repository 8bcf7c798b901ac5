package dhtrelay

import "errors"

// Sentinel errors. Every error this package returns wraps one of them (and,
// for decode errors, also the internal/compact error that caused it), so
// callers test with errors.Is.
var (
	// ErrMalformed wraps every message body that cannot be decoded: a field
	// cut short, a length or count larger than the body, an array above
	// the reference's 2^20 element limit. The reference's decoder throws
	// in the same cases, which destroys the whole relay stream.
	ErrMalformed = errors.New("dhtrelay: malformed message")
	// ErrUnknownType is returned by DecodeMessage for a message type the
	// protocol does not define. (On a live channel protomux drops those
	// before they reach a codec, as Node does.)
	ErrUnknownType = errors.New("dhtrelay: unknown message type")
	// ErrFrameTooLarge: a received frame announced (or a sent one has) a
	// length above the configured bound. The TCP transport reports it
	// before anything is allocated for the frame; WebSocket once the
	// message's bytes pass the bound.
	ErrFrameTooLarge = errors.New("dhtrelay: frame too large")
	// ErrWebSocket wraps violations of RFC 6455 by the peer (bad opcode,
	// reserved bits, fragmented control frame, wrong masking, a frame cut
	// short, a failed opening handshake), as github.com/coder/websocket
	// reports them.
	ErrWebSocket = errors.New("dhtrelay: websocket protocol error")
	// ErrClosed is returned by a transport after Close, or after the peer
	// sent a WebSocket close frame.
	ErrClosed = errors.New("dhtrelay: transport closed")
	// ErrProtocol wraps a message that is well formed but not valid in
	// the session's current state (a second handshake, a reply to a
	// request that was never made, an alias used twice). The reference
	// mostly ignores these silently; Session reports them so the caller
	// can decide, and never changes state for them.
	ErrProtocol = errors.New("dhtrelay: unexpected message")
	// ErrUnknownAlias: a message names an alias or request id that the
	// session does not know (any more). Wrapped together with ErrProtocol.
	ErrUnknownAlias = errors.New("dhtrelay: unknown alias or id")
	// ErrLimit: the peer made the session track more objects (streams,
	// servers, queries, pending requests) than Limits allows.
	ErrLimit = errors.New("dhtrelay: session limit reached")
	// ErrNotAnnounced: the relay confirmed a non-custodial listen, but no
	// DHT node it asks holds the announce that lets clients find the key.
	// The Node relay (@hyperswarm/dht-relay 0.4.3) does this: it cannot
	// encode the signAnnounce request a non-custodial announce needs.
	ErrNotAnnounced = errors.New("dhtrelay: the relay did not announce the key")
	// ErrListenRefused: the relay closed a non-custodial listener as soon
	// as it confirmed it. A keytunnel relay does so when it cannot verify
	// a signature by the key (the client does not hold it) or its node
	// already listens on the key.
	ErrListenRefused = errors.New("dhtrelay: the relay refused to listen on the key: it could not verify a signature by this key, or the key already listens through that relay")
)

// What a non-custodial client's answers can go wrong with (noncustodial.go);
// they end one dial, listen handshake or signature, not the session.
var (
	errHandshakeDenied = errors.New("dhtrelay: the client denied the handshake")
	errNoAnswer        = errors.New("dhtrelay: the client did not answer")
	errBadSignature    = errors.New("dhtrelay: the client's signature does not verify")
)
