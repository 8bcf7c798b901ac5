package protomux

import "errors"

var (
	// ErrClosed is returned by calls on a Mux that was closed locally
	// (Close or Destroy without an error of its own).
	ErrClosed = errors.New("protomux: mux closed")
	// ErrTransportClosed is the Mux's error when the framed transport
	// ended (EOF or a read/write error, wrapped).
	ErrTransportClosed = errors.New("protomux: transport closed")
	// ErrBadFrame is wrapped by every decode error of a received frame
	// (a varint or field cut short, a length past the end, a batch nested
	// too deep). The Mux is destroyed with it, as Node destroys the stream.
	ErrBadFrame = errors.New("protomux: malformed frame")
	// ErrInvalidOpen: the peer's OPEN used a channel id that is neither a
	// free slot nor one past the highest known one (Node: "Invalid open
	// message"). Fatal.
	ErrInvalidOpen = errors.New("protomux: invalid open message")
	// ErrInvalidReject: the peer rejected a local id that is not waiting
	// for a pairing (Node: "Invalid reject message"). Fatal.
	ErrInvalidReject = errors.New("protomux: invalid reject message")
	// ErrBacklog: the peer opened more unanswered channels than
	// Options.MaxBacklog. Fatal.
	ErrBacklog = errors.New("protomux: remote exceeded backlog")
	// ErrBadMessage wraps a channel message (or OPEN handshake) that its
	// codec could not decode. Fatal, as in Node where the throw reaches
	// the stream.
	ErrBadMessage = errors.New("protomux: undecodable channel message")
	// ErrDuplicateChannel: Open on a unique channel whose (protocol, id)
	// already has an open channel on this Mux.
	ErrDuplicateChannel = errors.New("protomux: channel already open")
	// ErrChannelClosed: Send or Open on a closed channel.
	ErrChannelClosed = errors.New("protomux: channel closed")
	// ErrNotOpen: Send before Open.
	ErrNotOpen = errors.New("protomux: channel not opened yet")
	// ErrAlreadyOpened: Open called twice, or AddMessage after Open.
	ErrAlreadyOpened = errors.New("protomux: channel already opened")
	// ErrWriteQueueFull: the outgoing queue holds more than
	// Options.MaxWriteQueue bytes; the frame was not queued. Wait with
	// Mux.Flush before sending more.
	ErrWriteQueueFull = errors.New("protomux: write queue full")
	// ErrFrameTooLarge: a frame above Options.MaxFrameSize would be sent.
	ErrFrameTooLarge = errors.New("protomux: frame too large")
)
