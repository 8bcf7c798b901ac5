package wire

import "errors"

// ErrorCode is hyperdht's numeric error: the error field of noise and
// holepunch payloads, and the dht-rpc reply error a persistent node sends
// for a rejected MUTABLE_PUT. It implements error so the store can return
// it; a DHT node turns it into a dht-rpc error reply with this code.
type ErrorCode uint64

// Error codes from lib/constants.js.
const (
	ErrorNone            ErrorCode = 0
	ErrorAborted         ErrorCode = 1
	ErrorVersionMismatch ErrorCode = 2
	ErrorTryLater        ErrorCode = 3
	ErrorSeqReused       ErrorCode = 16
	ErrorSeqTooLow       ErrorCode = 17
)

// String returns the reference's name (ERROR.<name>).
func (c ErrorCode) String() string {
	switch c {
	case ErrorNone:
		return "NONE"
	case ErrorAborted:
		return "ABORTED"
	case ErrorVersionMismatch:
		return "VERSION_MISMATCH"
	case ErrorTryLater:
		return "TRY_LATER"
	case ErrorSeqReused:
		return "SEQ_REUSED"
	case ErrorSeqTooLow:
		return "SEQ_TOO_LOW"
	}
	return "ERROR(" + itoa(uint64(c)) + ")"
}

func (c ErrorCode) Error() string { return "hyperdht: " + c.String() }

// ReplyCode reports whether err asks for a dht-rpc error reply, and with
// which code. Any other non-nil error from the Store means: send nothing,
// as the reference drops such requests silently.
func ReplyCode(err error) (ErrorCode, bool) {
	var c ErrorCode
	if errors.As(err, &c) {
		return c, true
	}
	return 0, false
}

// DHTError is one of the reference's local error classes (lib/errors.js).
// They never travel on the wire, but keeping the reference's codes lets
// logs and tests talk about failures by the names hyperdht users know.
// Two DHTErrors match under errors.Is when their codes are equal, so a
// custom message still matches the sentinel.
type DHTError struct {
	Code    string
	Message string
}

func (e *DHTError) Error() string { return e.Code + ": " + e.Message }

// Is matches any *DHTError with the same code.
func (e *DHTError) Is(target error) bool {
	t, ok := target.(*DHTError)
	return ok && t.Code == e.Code
}

// WithMessage returns an error with the same code and another message.
func (e *DHTError) WithMessage(msg string) *DHTError { return &DHTError{Code: e.Code, Message: msg} }

// The reference's error classes, with its default messages.
var (
	ErrBadHandshakeReply             = &DHTError{"BAD_HANDSHAKE_REPLY", "Bad handshake reply"}
	ErrBadHolepunchReply             = &DHTError{"BAD_HOLEPUNCH_REPLY", "Bad holepunch reply"}
	ErrHolepunchAborted              = &DHTError{"HOLEPUNCH_ABORTED", "Holepunch aborted"}
	ErrHolepunchInvalid              = &DHTError{"HOLEPUNCH_INVALID", "Invalid holepunch payload"}
	ErrHolepunchProbeTimeout         = &DHTError{"HOLEPUNCH_PROBE_TIMEOUT", "Holepunching probe did not finish in time"}
	ErrHolepunchDoubleRandomizedNATs = &DHTError{"HOLEPUNCH_DOUBLE_RANDOMIZED_NATS", "Both remote and local NATs are randomized"}
	ErrCannotHolepunch               = &DHTError{"CANNOT_HOLEPUNCH", "Cannot holepunch to remote"}
	ErrRemoteNotHolepunching         = &DHTError{"REMOTE_NOT_HOLEPUNCHING", "Remote is not holepunching"}
	ErrRemoteNotHolepunchable        = &DHTError{"REMOTE_NOT_HOLEPUNCHABLE", "Remote is not holepunchable"}
	ErrRemoteAborted                 = &DHTError{"REMOTE_ABORTED", "Remote aborted"}
	ErrHandshakeUnfinished           = &DHTError{"HANDSHAKE_UNFINISHED", "Handshake did not finish"}
	ErrHandshakeInvalid              = &DHTError{"HANDSHAKE_INVALID", "Received invalid handshake"}
	ErrAlreadyListening              = &DHTError{"ALREADY_LISTENING", "Already listening"}
	ErrKeyPairAlreadyUsed            = &DHTError{"KEYPAIR_ALREADY_USED", "Keypair already used"}
	ErrNodeDestroyed                 = &DHTError{"NODE_DESTROYED", "Node destroyed"}
	ErrPeerConnectionFailed          = &DHTError{"PEER_CONNECTION_FAILED", "Could not connect to peer"}
	ErrPeerNotFound                  = &DHTError{"PEER_NOT_FOUND", "Peer not found"}
	ErrStreamNotConnected            = &DHTError{"STREAM_NOT_CONNECTED", "Stream is not connected"}
	ErrServerIncompatible            = &DHTError{"SERVER_INCOMPATIBLE", "Server is using an incompatible version"}
	ErrServerError                   = &DHTError{"SERVER_ERROR", "Server returned an error"}
	ErrDuplicateConnection           = &DHTError{"DUPLICATE_CONNECTION", "Duplicate connection"}
	ErrRelayAborted                  = &DHTError{"RELAY_ABORTED", "Relay aborted"}
	ErrSuspended                     = &DHTError{"SUSPENDED", "Suspended"}
)

// Sentinel errors of this package. Store methods wrap them to say why a
// request was dropped; a DHT node sends no reply for any of them.
var (
	// ErrDecode wraps every message decoding failure.
	ErrDecode = errors.New("hyperdht: malformed message")
	// ErrMissingField is a request without the target, token or value
	// the command needs.
	ErrMissingField = errors.New("hyperdht: missing target, token or value")
	// ErrBadSignature is a signature that does not verify.
	ErrBadSignature = errors.New("hyperdht: bad signature")
	// ErrTargetMismatch is a target that is not the hash it must be
	// (H(publicKey) for mutables, H(value) for immutables).
	ErrTargetMismatch = errors.New("hyperdht: target does not match content")
	// ErrUnknownRefresh is a refresh announce for a refresh token this
	// node does not remember.
	ErrUnknownRefresh = errors.New("hyperdht: unknown refresh token")
	// ErrDecrypt is a secure payload that is too short or fails
	// authentication.
	ErrDecrypt = errors.New("hyperdht: secure payload does not open")
)
