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
