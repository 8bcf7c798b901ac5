package dht

import (
	"context"
	"errors"
	"net"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Listener accepts encrypted connections to one key pair.
type Listener struct {
	n  *Node
	kp key.KeyPair
}

// Accept waits for the next connection; it is a *Conn.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptConn(context.Background()) }

// AcceptConn waits for the next connection or for ctx.
func (l *Listener) AcceptConn(ctx context.Context) (*Conn, error) {
	return nil, errors.New("dht: listen not implemented yet")
}

// Close unannounces and stops accepting; established connections stay.
func (l *Listener) Close() error { return nil }

// Addr is the key's address (network "hyperdht", the hex public key).
func (l *Listener) Addr() net.Addr { return keyAddr(l.kp.Public) }

// PublicKey is the key the listener serves.
func (l *Listener) PublicKey() key.PublicKey { return l.kp.Public }

type keyAddr key.PublicKey

func (keyAddr) Network() string  { return "hyperdht" }
func (a keyAddr) String() string { return key.PublicKey(a).String() }

func (n *Node) dial(ctx context.Context, remote key.PublicKey, opts *DialOptions) (*Conn, error) {
	return nil, errors.New("dht: dial not implemented yet")
}

func (n *Node) listen(ctx context.Context, kp key.KeyPair, opts *ListenOptions) (*Listener, error) {
	return nil, errors.New("dht: listen not implemented yet")
}
