package keytunnel

import (
	"errors"
	"fmt"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/tunnel"
)

var (
	// ErrRefused: the peer turned us away, usually because its allow list
	// does not hold our key (a hyperdht server reports that, and its other
	// failures, as SERVER_ERROR; Dial's error carries the peer's reason).
	ErrRefused = errors.New("keytunnel: refused by the peer")
	// ErrNotFound: no node of the DHT knows a peer listening on the key.
	ErrNotFound = errors.New("keytunnel: no peer listens on that key")
	// ErrNotKeytunnel: the peer answered a Dial with something other than
	// a keytunnel session; it is probably a hypertele or holesail server,
	// which Dial reaches with the Raw option.
	ErrNotKeytunnel = errors.New("keytunnel: the peer does not speak keytunnel sessions")
	// ErrClosed is returned by a Node's methods after Close.
	ErrClosed = errors.New("keytunnel: node closed")
	// ErrListening: the node's key is already announced by Listen or
	// Expose; one node serves its key once.
	ErrListening = errors.New("keytunnel: the node is already listening on its key")
	// ErrServed: Listen or Expose found another running process serving
	// the node's key (it answered a handshake made with that key) and did
	// not announce it; the Replace option takes the key over.
	ErrServed = errors.New("keytunnel: another running process already serves the node's key")
)

// dialError names what went wrong in a Dial by this package's sentinels,
// keeping the cause.
func dialError(remote string, err error) error {
	switch {
	case errors.Is(err, tunnel.ErrClosed):
		return ErrClosed
	case errors.Is(err, tunnel.ErrRefused) || errors.Is(err, dht.ErrRefused):
		return fmt.Errorf("keytunnel: dialing %s: %w: %w", remote, ErrRefused, err)
	case errors.Is(err, tunnel.ErrProtocol):
		return fmt.Errorf("keytunnel: dialing %s: %w: %w", remote, ErrNotKeytunnel, err)
	case errors.Is(err, dht.ErrPeerNotFound):
		return fmt.Errorf("keytunnel: dialing %s: %w: %w", remote, ErrNotFound, err)
	}
	return fmt.Errorf("keytunnel: dialing %s: %w", remote, err)
}
