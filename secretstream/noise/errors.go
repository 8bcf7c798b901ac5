package noise

import "errors"

var (
	// ErrBadPoint is returned when a peer's public key is not a point DH
	// may use: not a canonical encoding, not on the curve, of small order,
	// or outside the prime-order subgroup. libsodium refuses all of these,
	// so the Node side fails the same handshakes.
	ErrBadPoint = errors.New("noise: public key is not a usable Ed25519 point")
	// ErrIdentity is returned when DH yields the identity point, which no
	// honest key pair produces.
	ErrIdentity = errors.New("noise: DH result is the identity point")
	// ErrBadKey is returned for a local key that is not a 64-byte Ed25519
	// private key.
	ErrBadKey = errors.New("noise: bad private key")
	// ErrMessage is returned for a handshake message that fails to decode
	// or authenticate.
	ErrMessage = errors.New("noise: bad handshake message")
	// ErrState is returned for a call out of turn: writing when a read is
	// due, or asking for the result before the handshake completed.
	ErrState = errors.New("noise: handshake call out of order")
	// ErrConfig is returned by New for an unusable Config.
	ErrConfig = errors.New("noise: bad config")
)
