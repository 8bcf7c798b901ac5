package dhtrelay

import (
	"context"
	"fmt"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/protomux"
	"github.com/keytunnel/keytunnel/secretstream"
)

// DefaultMaxFrame bounds a received frame on either transport unless the
// caller chooses otherwise: 16 MiB, secret-stream's own maximum (a u24
// length), which is also larger than anything a Node peer sends as one
// protomux frame short of a corked 8 MiB batch.
const DefaultMaxFrame = secretstream.MaxFrame

// TCPOptions configure TCP.
type TCPOptions struct {
	// KeyPair is this side's static key for the XX handshake. The
	// reference uses a fresh random key pair and never checks the peer's,
	// so the zero value (random) is what to use unless the application
	// pins keys itself (RemotePublicKey on the returned Conn).
	KeyPair key.KeyPair
	// MaxFrame bounds received frames; 0 means DefaultMaxFrame.
	MaxFrame int
}

// TCP runs the reference's TCP transport (@hyperswarm/dht-relay/tcp, which
// is @hyperswarm/secret-stream) over raw, a TCP connection or any reliable
// byte stream, and returns it as a protomux transport:
//
//   - Noise XX over Ed25519 with an empty prologue (secret-stream's own
//     handshake; the client is the initiator), then the secret-stream
//     header exchange;
//   - every frame is u24le length ‖ crypto_secretstream ciphertext, and
//     one frame carries exactly one protomux frame.
//
// It returns once the handshake is done or ctx ends (which closes raw).
// The secret-stream Conn is returned too, for its keys.
func TCP(ctx context.Context, raw secretstream.RawConn, isInitiator bool, opts TCPOptions) (protomux.Framed, *secretstream.Conn, error) {
	max := opts.MaxFrame
	if max <= 0 {
		max = DefaultMaxFrame
	}
	c, err := secretstream.New(raw, secretstream.Options{
		IsInitiator:  isInitiator,
		KeyPair:      opts.KeyPair,
		MaxFrameSize: max,
	})
	if err != nil {
		raw.Close()
		return nil, nil, fmt.Errorf("dhtrelay: tcp transport: %w", err)
	}
	if err := c.Handshake(ctx); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("dhtrelay: tcp transport handshake: %w", err)
	}
	return protomux.SecretStream(c), c, nil
}
