package blindrelay

import "errors"

// Sentinel errors. Every error this package returns or reports wraps one of
// them, so callers test with errors.Is. The reference's error codes
// (blind-relay lib/errors.js) are named where they correspond.
var (
	// ErrMalformed wraps a pair or unpair body that cannot be decoded (a
	// field cut short). On a live channel protomux destroys the whole
	// connection for it (ErrBadMessage), as the reference's throw does.
	ErrMalformed = errors.New("blindrelay: malformed message")
	// ErrClosed: the Client, Session or Server was closed locally.
	ErrClosed = errors.New("blindrelay: closed")
	// ErrChannelClosed: the blind-relay channel closed under a pending
	// request: the peer closed it, rejected it or the connection died
	// (CHANNEL_CLOSED).
	ErrChannelClosed = errors.New("blindrelay: channel closed")
	// ErrDuplicateChannel: the Mux already has an open blind-relay channel
	// with this id (DUPLICATE_CHANNEL).
	ErrDuplicateChannel = errors.New("blindrelay: duplicate channel")
	// ErrAlreadyPairing: Pair for a token that already has a request
	// outstanding on this Client (ALREADY_PAIRING).
	ErrAlreadyPairing = errors.New("blindrelay: already pairing")
	// ErrPairingCancelled: Unpair was called for the token of a pending
	// Pair (PAIRING_CANCELLED).
	ErrPairingCancelled = errors.New("blindrelay: pairing cancelled")
	// ErrInvalidStreamID: a pair message carried an id above 2^32-1, which
	// no UDX stream can have. The client fails the request; the server
	// refuses it.
	ErrInvalidStreamID = errors.New("blindrelay: stream id out of range")
	// ErrLimit: the server refused a pair request because a bound
	// (ServerOptions MaxPending, MaxPendingPerSession, MaxActive) was
	// reached; the protocol has no way to tell the requester, whose Pair
	// then ends with its context. Or Accept refused a session over
	// MaxSessions or MaxSessionsPerSource.
	ErrLimit = errors.New("blindrelay: limit reached")
	// ErrUnknownToken: an unpair named a token the session has neither
	// pending nor paired.
	ErrUnknownToken = errors.New("blindrelay: unknown token")
	// ErrExpired: a pending pairing waited longer than
	// ServerOptions.PendingTimeout for its other half and was dropped.
	ErrExpired = errors.New("blindrelay: pairing expired")
	// ErrSilent: a session sent no pair request within
	// ServerOptions.FirstMessageTimeout and was closed with its Mux.
	ErrSilent = errors.New("blindrelay: session silent")
	// ErrIdle: a relayed pair carried no packet for
	// ServerOptions.IdleTimeout and was torn down.
	ErrIdle = errors.New("blindrelay: relayed pair idle")
)
