package udx

import (
	"errors"
	"fmt"
	"os"
)

// Sentinel errors. Errors returned by this package wrap one of these so
// callers can use errors.Is.
var (
	// ErrNotUDX: the datagram is not a UDX stream packet.
	ErrNotUDX = errors.New("udx: not a stream packet")
	// ErrClosed: the socket, instance or stream was closed locally.
	ErrClosed = errors.New("udx: closed")
	// ErrReset: the peer destroyed the stream (DESTROY packet); libudx's ECONNRESET.
	ErrReset = errors.New("udx: stream reset by peer")
	// ErrTimeout: a packet went unacknowledged through too many RTOs; libudx's ETIMEDOUT.
	ErrTimeout = errors.New("udx: stream timed out")
	// ErrDestroyed: the stream was destroyed locally.
	ErrDestroyed = errors.New("udx: stream destroyed")
	// ErrIDInUse: a live stream already has this local id.
	ErrIDInUse = errors.New("udx: stream id in use")
	// ErrNotConnected: the operation needs a connected stream.
	ErrNotConnected = errors.New("udx: stream not connected")
	// ErrAlreadyConnected: Connect was called twice.
	ErrAlreadyConnected = errors.New("udx: stream already connected")
	// ErrWriteClosed: Write after CloseWrite.
	ErrWriteClosed = errors.New("udx: write after end")
	// ErrMessageTooLarge: a MESSAGE would not fit the peer's 2048-byte receive buffer.
	ErrMessageTooLarge = errors.New("udx: message too large")
	// ErrRemoteChanging: ChangeRemote while a previous change is incomplete.
	ErrRemoteChanging = errors.New("udx: remote already changing")
	// ErrWouldBlock: Send (TrySend) found its queue full; the datagram
	// was dropped.
	ErrWouldBlock = errors.New("udx: would block")
)

// StreamError records why a stream ended abnormally.
type StreamError struct {
	ID  uint32 // local stream id
	Err error  // ErrReset, ErrTimeout, ErrDestroyed, ErrClosed
}

func (e *StreamError) Error() string { return fmt.Sprintf("udx: stream %d: %v", e.ID, e.Err) }
func (e *StreamError) Unwrap() error { return e.Err }

// deadlineError satisfies net.Error and os.ErrDeadlineExceeded.
type deadlineError struct{}

func (deadlineError) Error() string   { return "udx: i/o timeout" }
func (deadlineError) Timeout() bool   { return true }
func (deadlineError) Temporary() bool { return true }
func (deadlineError) Is(t error) bool { return t == os.ErrDeadlineExceeded }

var errDeadline error = deadlineError{}
