package secretstream

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by a Conn wrap one of these (usually in a
// *ProtocolError that says where it happened), so test with errors.Is.
var (
	// ErrShortMessage: a data frame shorter than the 17 bytes of
	// secretstream overhead. Node destroys the stream with "Invalid message
	// received".
	ErrShortMessage = errors.New("secretstream: message shorter than 17 bytes")
	// ErrDecrypt: a data frame failed authentication (corrupted, forged,
	// reordered, or encrypted under another key).
	ErrDecrypt = errors.New("secretstream: message authentication failed")
	// ErrHeader: the first frame after the handshake is not the 56-byte
	// stream id ‖ secretstream header. Node: "Invalid header message received".
	ErrHeader = errors.New("secretstream: invalid header message")
	// ErrStreamID: the header carries a stream id other than the one the
	// handshake hash and the peer's role give. Node: "Invalid header received".
	ErrStreamID = errors.New("secretstream: stream id does not match the handshake")
	// ErrFrameTooLarge: a length prefix above the receive bound
	// (Options.MaxFrameSize, at most MaxFrame).
	ErrFrameTooLarge = errors.New("secretstream: frame length above the limit")
	// ErrTruncated: the byte stream ended inside a frame.
	ErrTruncated = errors.New("secretstream: stream ended inside a frame")
	// ErrHandshake: the Noise handshake failed (bad message, failed DH or
	// decryption, or the stream ended during it). Node: "Noise handshake failed".
	ErrHandshake = errors.New("secretstream: noise handshake failed")
	// ErrNonceExhausted: the datagram counter came back to its random start
	// after 2^64 sends. Node: "udp send nonce exchausted".
	ErrNonceExhausted = errors.New("secretstream: datagram nonce exhausted")
	// ErrWriteClosed: Write after CloseWrite.
	ErrWriteClosed = errors.New("secretstream: write after CloseWrite")
	// ErrBadOptions: Options that cannot work (for example a precomputed
	// handshake whose role differs from IsInitiator).
	ErrBadOptions = errors.New("secretstream: invalid options")
)

// Phase names where in the protocol an error happened.
type Phase int

const (
	PhaseHandshake Phase = iota // Noise XX messages
	PhaseHeader                 // stream id ‖ secretstream header
	PhaseData                   // encrypted data frames
)

func (p Phase) String() string {
	switch p {
	case PhaseHandshake:
		return "handshake"
	case PhaseHeader:
		return "header"
	case PhaseData:
		return "data"
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// ProtocolError is a violation of the wire protocol by the peer (or a
// corrupted stream). It is permanent: the Conn cannot be used for reading
// afterwards, as Node destroys the stream in the same cases.
type ProtocolError struct {
	Phase Phase
	Frame int64 // index of the received frame, counting from 0 over all phases
	Len   int   // the frame's length prefix, when known (else -1)
	Err   error // one of the sentinels above, or the underlying cause
}

func (e *ProtocolError) Error() string {
	if e.Len >= 0 {
		return fmt.Sprintf("secretstream: %s frame %d (length %d): %v", e.Phase, e.Frame, e.Len, e.Err)
	}
	return fmt.Sprintf("secretstream: %s frame %d: %v", e.Phase, e.Frame, e.Err)
}

func (e *ProtocolError) Unwrap() error { return e.Err }
