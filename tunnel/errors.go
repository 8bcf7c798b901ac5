package tunnel

import "errors"

var (
	// ErrRefused is returned to a keytunnel client whose key the exposing
	// peer's allow list does not hold. The error wraps the server's reason.
	ErrRefused = errors.New("tunnel: refused by peer")
	// ErrProtocol means the peer answered the preamble with something that
	// is not a keytunnel reply: usually a raw (hypertele-style) server, or a
	// keytunnel server whose detection wait expired before our preamble
	// arrived and that therefore treated us as raw.
	ErrProtocol = errors.New("tunnel: peer did not answer the keytunnel preamble")
	// ErrWaitTimeout is the fate of a local connection that waited longer
	// than ForwardOptions.WaitTimeout for a peer session to come up.
	ErrWaitTimeout = errors.New("tunnel: timed out waiting for a peer session")
	// ErrUnreachable fails a Forwarder's local connection when the peer
	// is known to be unreachable: the dial it waited for failed, or one
	// failed within the backoff (ForwardOptions.BackoffBase). It wraps the
	// dial's error.
	ErrUnreachable = errors.New("tunnel: cannot reach the peer")
	// ErrClosed is returned by operations on a Forwarder or Exposer after
	// Close.
	ErrClosed = errors.New("tunnel: closed")
	// ErrSessionLost ends a tunnelled connection whose peer session died
	// under it (the peer connection failed or was closed): the data may
	// be cut short, so the local side gets a reset rather than an end.
	ErrSessionLost = errors.New("tunnel: peer session lost")
	// ErrOverBudget is why Expose refused a session or stream: the
	// Budget cap it names is reached. Existing sessions and streams go on.
	ErrOverBudget = errors.New("tunnel: over budget")
	// ErrBadBudget reports a Budget that cannot be applied.
	ErrBadBudget = errors.New("tunnel: invalid budget")
	// ErrBadService reports a service name or list that cannot be served
	// (CheckServices).
	ErrBadService = errors.New("tunnel: invalid service")
	// ErrProbeDial is Check's error when the throughput sample's own
	// connection could not be dialed (twice), after the first connection
	// worked. It wraps the dial's error.
	ErrProbeDial = errors.New("tunnel: could not dial the throughput sample's connection")
)
