package dht

import (
	"errors"
	"fmt"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
)

var (
	// ErrClosed is returned by calls on a closed Node.
	ErrClosed = errors.New("dht: node closed")
	// ErrNotFound is returned by the get operations when no node holds a
	// valid record.
	ErrNotFound = errors.New("dht: not found")
	// ErrNoCommit is returned when a put or announce reached none of the
	// closest nodes (no node answered the commit without an error).
	ErrNoCommit = errors.New("dht: no node accepted the request")
	// ErrBadConfig is returned by New for an unusable configuration.
	ErrBadConfig = errors.New("dht: bad config")
	// ErrAnnounceNotSigned: Listen's first announce stored nothing because
	// the listener's Signer failed for every node; the key is not held.
	ErrAnnounceNotSigned = errors.New("dht: the announce could not be signed by the listener's key")
	// ErrRaw is AcceptConn on a Listener whose handshakes run elsewhere
	// (ListenOptions.Handshakes): its connections are RawConns.
	ErrRaw = errors.New("dht: the listener's connections are raw; use AcceptRaw")
	// ErrNotRaw is AcceptRaw on a Listener that runs its handshakes itself.
	ErrNotRaw = errors.New("dht: the listener's connections are encrypted; use AcceptConn")

	// errNoSecretKey: a key pair without its secret key, and no Signer or
	// Handshaker to stand in for it.
	errNoSecretKey = errors.New("dht: the key pair has no secret key and no Signer or Handshaker was given")
)

// RemoteError is a storage command answered with a hyperdht error code
// (wire.ErrorSeqReused, wire.ErrorSeqTooLow). errors.Is matches it against
// another *RemoteError, an *rpc.RemoteError or a wire.ErrorCode with the
// same code.
type RemoteError struct {
	Code uint64
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("dht: remote error %s (%d)", wire.ErrorCode(e.Code), e.Code)
}

func (e *RemoteError) Is(target error) bool {
	switch t := target.(type) {
	case *RemoteError:
		return t.Code == e.Code
	case *rpc.RemoteError:
		return t.Code == e.Code
	case wire.ErrorCode:
		return uint64(t) == e.Code
	}
	return false
}

var (
	// ErrSeqReused: a mutable put reused a stored seq with another value.
	ErrSeqReused = &RemoteError{Code: uint64(wire.ErrorSeqReused)}
	// ErrSeqTooLow: a mutable put's seq is below the stored one.
	ErrSeqTooLow = &RemoteError{Code: uint64(wire.ErrorSeqTooLow)}
)

// ConnectError is a failed Dial or a refused Listen, named by the
// reference's error code (hyperdht lib/errors.js) so logs read the same on
// both implementations. errors.Is matches any *ConnectError with the same
// Code, so callers compare against the sentinels below.
type ConnectError struct {
	Code    string
	Message string
	Err     error // an underlying cause, if any
}

func (e *ConnectError) Error() string {
	s := "dht: " + e.Code + ": " + e.Message
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ConnectError) Unwrap() error { return e.Err }

func (e *ConnectError) Is(target error) bool {
	t, ok := target.(*ConnectError)
	return ok && t.Code == e.Code
}

// with returns a copy of e carrying cause.
func (e *ConnectError) with(cause error) *ConnectError {
	return &ConnectError{Code: e.Code, Message: e.Message, Err: cause}
}

var (
	ErrPeerNotFound = &ConnectError{Code: "PEER_NOT_FOUND", Message: "no node knows the peer"}
	// ErrPeerConnectionFailed: the peer is announced but its handshake
	// went unanswered. A Node server's firewall refuses in silence
	// (keytunnel's answers, see ErrRefused), so the message names it.
	ErrPeerConnectionFailed = &ConnectError{Code: "PEER_CONNECTION_FAILED", Message: "the peer did not answer the handshake (it is gone, or its firewall refuses our key: Node servers refuse without a word)"}
	ErrBadHandshakeReply    = &ConnectError{Code: "BAD_HANDSHAKE_REPLY", Message: "bad handshake reply"}
	ErrBadHolepunchReply    = &ConnectError{Code: "BAD_HOLEPUNCH_REPLY", Message: "bad holepunch reply"}
	ErrServerIncompatible   = &ConnectError{Code: "SERVER_INCOMPATIBLE", Message: "server speaks another handshake version"}
	ErrServerError          = &ConnectError{Code: "SERVER_ERROR", Message: "server refused the connection"}
	// ErrRefused: the server's firewall denied our key (it answered
	// ABORTED; a Node client reports the same answer as SERVER_ERROR).
	ErrRefused               = &ConnectError{Code: "SERVER_ERROR", Message: "the server refused the connection (firewall)"}
	ErrHandshakeInvalid      = &ConnectError{Code: "HANDSHAKE_INVALID", Message: "invalid handshake"}
	ErrCannotHolepunch       = &ConnectError{Code: "CANNOT_HOLEPUNCH", Message: "the server is firewalled and cannot be holepunched"}
	ErrHolepunchAborted      = &ConnectError{Code: "HOLEPUNCH_ABORTED", Message: "holepunch aborted"}
	ErrHolepunchInvalid      = &ConnectError{Code: "HOLEPUNCH_INVALID", Message: "invalid holepunch payload"}
	ErrHolepunchProbeTimeout = &ConnectError{Code: "HOLEPUNCH_PROBE_TIMEOUT", Message: "could not learn both NAT types"}
	ErrDoubleRandomized      = &ConnectError{Code: "HOLEPUNCH_DOUBLE_RANDOMIZED_NATS", Message: "both peers are behind randomizing NATs; a relay is needed"}
	ErrRemoteNotHolepunching = &ConnectError{Code: "REMOTE_NOT_HOLEPUNCHING", Message: "the server did not start punching"}
	ErrRemoteNotPunchable    = &ConnectError{Code: "REMOTE_NOT_HOLEPUNCHABLE", Message: "no punch strategy fits the NAT pair"}
	ErrRemoteAborted         = &ConnectError{Code: "REMOTE_ABORTED", Message: "the server aborted the holepunch"}
	ErrHolepunchTimeout      = &ConnectError{Code: "HOLEPUNCH_TIMEOUT", Message: "no punch got through"}
	ErrRelayAborted          = &ConnectError{Code: "RELAY_ABORTED", Message: "pairing through the blind relay failed"}
	ErrKeyPairAlreadyUsed    = &ConnectError{Code: "KEYPAIR_ALREADY_USED", Message: "this node already listens on the key pair"}
	// ErrNoStreams: the node's socket is not a UDP or udx socket, so it
	// carries DHT traffic only.
	ErrNoStreams = errors.New("dht: node socket carries no streams (not a UDP or udx socket)")
	// ErrListenerClosed is returned by Accept after Close.
	ErrListenerClosed = errors.New("dht: listener closed")
)
