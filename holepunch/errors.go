package holepunch

import "errors"

var (
	// ErrDoubleRandomized is returned when both NATs randomize their ports:
	// no punch strategy can meet, and only a relay connects such peers
	// (hyperdht's HOLEPUNCH_DOUBLE_RANDOMIZED_NATS).
	ErrDoubleRandomized = errors.New("holepunch: both peers are behind randomizing NATs (HOLEPUNCH_DOUBLE_RANDOMIZED_NATS)")
	// ErrNotHolepunchable is returned when the pair of NATs and what we know
	// of the remote addresses allows no strategy (REMOTE_NOT_HOLEPUNCHABLE).
	ErrNotHolepunchable = errors.New("holepunch: remote is not holepunchable (REMOTE_NOT_HOLEPUNCHABLE)")
	// ErrPunchTimeout is returned when every round was sent and no punch
	// came back.
	ErrPunchTimeout = errors.New("holepunch: no punch arrived (HOLEPUNCH_ABORTED)")
	// ErrClosed is returned by a Puncher that was closed before it connected.
	ErrClosed = errors.New("holepunch: puncher closed")
)
