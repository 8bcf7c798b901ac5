package dht

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/secretstream"
)

// Firewall decides, before any data flows, whether a client may connect to
// a Listener. It returns true to deny, as hyperdht's firewall option does.
// remoteAddr is the client's address as the relaying node saw it.
type Firewall func(remote key.PublicKey, remoteAddr netip.AddrPort) (deny bool)

// ListenOptions tunes Listen. The zero value (or nil) accepts every client.
type ListenOptions struct {
	Firewall Firewall
	// RelayThrough, when set, makes every connection pair through a blind
	// relay in parallel with holepunching (hyperdht's relayThrough).
	RelayThrough RelayThrough
	// ReusableSocket tells clients the path to us may be reused: a client
	// that also sets it handshakes straight with us next time.
	ReusableSocket bool
	// Handshakes, when set, returns the Handshaker for each client's
	// handshake, instead of running it with the key pair's secret key:
	// connections then arrive as RawConns (AcceptRaw).
	Handshakes func() Handshaker
	// Signer, when set, signs the listener's announce and unannounce
	// records instead of the key pair's secret key.
	Signer Signer
}

// DialOptions tunes Dial. The zero value (or nil) dials with the node's
// default key pair.
type DialOptions struct {
	// KeyPair is the client's identity; zero means the node's key pair.
	KeyPair key.KeyPair
	// RelayThrough, when set, pairs the connection through a blind relay
	// in parallel with holepunching; the relay path is used when no
	// direct path is found (both NATs randomize, say).
	RelayThrough RelayThrough
	// ReusableSocket remembers the path to a server that allows it, and
	// tries it first on the next Dial (hyperdht's reusableSocket).
	ReusableSocket bool
	// Report, when set, is filled in by a Dial that succeeds: the path
	// the connection took and why, for diagnostics (keytunnel doctor).
	Report *DialReport
}

// DialReport says how a Dial reached its peer.
type DialReport struct {
	// Path is how the connection runs: PathDirect, PathLAN,
	// PathHolepunch, PathPeerFirst or PathRelay.
	Path string
	// Ours and Theirs are the NAT classes both sides announced in the
	// handshake: "open", "consistent", "random" or "unknown".
	Ours, Theirs string
	// Server is the peer's address the connection went to (for PathRelay,
	// the blind relay's).
	Server netip.AddrPort
	// Relay is the blind relay of a PathRelay connection.
	Relay key.PublicKey
	// DirectErr is why no direct path won, on a relayed connection (nil
	// when the relay merely paired first).
	DirectErr error
}

// The paths of DialReport.Path.
const (
	PathDirect    = "direct"     // the peer is reachable at its address: no punch needed
	PathLAN       = "lan"        // the peer is on our LAN (same public address)
	PathHolepunch = "holepunch"  // both NATs punched through
	PathPeerFirst = "peer-first" // the peer's packets reached us first (it punched or we are open)
	PathRelay     = "relay"      // through a blind relay
)

// Conn is an end-to-end encrypted connection to a peer: a secret-stream
// over a udx stream. RemotePublicKey names the peer; CloseWrite half-closes.
type Conn = secretstream.Conn

var _ net.Listener = (*Listener)(nil)

// Dial reaches the peer listening on remote and returns an encrypted
// connection: FIND_PEER, PEER_HANDSHAKE through the server's relay nodes,
// holepunching when needed, then secret-stream over udx.
func (n *Node) Dial(ctx context.Context, remote key.PublicKey, opts *DialOptions) (*Conn, error) {
	c, err := n.dial(ctx, remote, opts, nil)
	if err != nil {
		return nil, err
	}
	return c.(*Conn), nil
}

// DialRaw is Dial with the Noise handshake run by h, which holds the
// client's key (opts.KeyPair is not used): the connection is the udx
// stream, carrying the secret-stream that h's owner runs over it.
func (n *Node) DialRaw(ctx context.Context, remote key.PublicKey, h Handshaker, opts *DialOptions) (*RawConn, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: DialRaw without a Handshaker", ErrBadConfig)
	}
	c, err := n.dial(ctx, remote, opts, h)
	if err != nil {
		return nil, err
	}
	rc, ok := c.(*RawConn)
	if !ok {
		// h handed over its keys: it ran here after all.
		c.Close()
		return nil, fmt.Errorf("%w: the Handshaker returned transport keys", ErrBadConfig)
	}
	return rc, nil
}

// Listen announces kp's public key on the DHT and accepts connections to it
// until the Listener is closed, which unannounces. With opts.Handshakes and
// opts.Signer, kp's secret key is not needed.
func (n *Node) Listen(ctx context.Context, kp key.KeyPair, opts *ListenOptions) (*Listener, error) {
	return n.listen(ctx, kp, opts)
}
