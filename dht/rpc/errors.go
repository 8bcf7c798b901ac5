package rpc

import (
	"errors"
	"fmt"
)

// Error codes carried in RESPONSE messages. Codes above 2 belong to the
// application (hyperdht uses 16 and up).
const (
	CodeOK             = 0
	CodeUnknownCommand = 1
	CodeInvalidToken   = 2
)

var (
	// ErrMalformed is returned by the decoders for a datagram that is not a
	// well-formed message; wrapped errors give the detail.
	ErrMalformed = errors.New("rpc: malformed message")
	// ErrTimeout is the reference's REQUEST_TIMEOUT: every transmission of
	// a request went unanswered.
	ErrTimeout = errors.New("rpc: request timed out")
	// ErrDestroyed is the reference's REQUEST_DESTROYED: the request was
	// cancelled (its query ended, its context ended or the node closed).
	ErrDestroyed = errors.New("rpc: request destroyed")
	// ErrClosed is returned by calls on a closed node.
	ErrClosed = errors.New("rpc: node closed")
	// ErrTooFewNodes is returned by a committing query when no node
	// replied closely enough to commit to ("Too few nodes responded").
	ErrTooFewNodes = errors.New("rpc: too few nodes responded")
	// ErrNoToken is returned by the automatic commit when the closest
	// reply carried no token.
	ErrNoToken = errors.New("rpc: no token received for closest node")
	// ErrNotIPv4 is returned for a destination that is not an IPv4 address;
	// dht-rpc speaks IPv4 only.
	ErrNotIPv4 = errors.New("rpc: address is not IPv4")
	// ErrBadConfig is returned by New for an unusable configuration.
	ErrBadConfig = errors.New("rpc: bad config")
)

// RemoteError is a RESPONSE with a non-zero error code. Request returns
// it (with the Response) when the remote node answered with an error.
type RemoteError struct {
	Code uint64
}

func (e *RemoteError) Error() string {
	switch e.Code {
	case CodeUnknownCommand:
		return "rpc: remote error 1 (UNKNOWN_COMMAND)"
	case CodeInvalidToken:
		return "rpc: remote error 2 (INVALID_TOKEN)"
	}
	return fmt.Sprintf("rpc: remote error %d", e.Code)
}

// Is makes errors.Is(err, &RemoteError{Code: c}) match on the code.
func (e *RemoteError) Is(target error) bool {
	t, ok := target.(*RemoteError)
	return ok && t.Code == e.Code
}

func malformed(err error) error { return fmt.Errorf("%w: %w", ErrMalformed, err) }
