package tunnel

import (
	"context"
	"net"

	"github.com/keytunnel/keytunnel/internal/key"
)

// PeerConn is an encrypted connection to a peer identified by its public
// key. CloseWrite is part of the contract because raw mode carries a TCP
// half-close across the tunnel as a half-close of the peer connection
// (secretstream's end-of-stream); without it a client that shuts its write
// side could never tell the service it is done.
type PeerConn interface {
	net.Conn
	CloseWrite() error
	RemotePublicKey() key.PublicKey
}

// Dialer reaches the service behind a public key (the DHT's Dial).
type Dialer interface {
	Dial(ctx context.Context, remote key.PublicKey) (PeerConn, error)
}

// PeerListener accepts peers on our key pair (the DHT's Listen). Accept
// must return an error after Close so that an Exposer can stop.
type PeerListener interface {
	Accept() (PeerConn, error)
	Close() error
	PublicKey() key.PublicKey
}

// AllowList is a set of public keys allowed to use an exposed service. A nil
// or empty list allows every key, as hypertele-server does without -p.
//
// The same Allows method is what the DHT listener's firewall callback should
// call, so that a disallowed peer is rejected during the handshake; the
// check in Expose is the second line, and the only one that can tell a
// keytunnel client why.
type AllowList map[key.PublicKey]struct{}

// NewAllowList returns an AllowList holding keys.
func NewAllowList(keys ...key.PublicKey) AllowList {
	if len(keys) == 0 {
		return nil
	}
	a := make(AllowList, len(keys))
	for _, k := range keys {
		a[k] = struct{}{}
	}
	return a
}

// Allows reports whether k may connect.
func (a AllowList) Allows(k key.PublicKey) bool {
	if len(a) == 0 {
		return true
	}
	_, ok := a[k]
	return ok
}
