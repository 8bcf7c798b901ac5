package dht

import (
	"context"
	"crypto/ed25519"
	"io"

	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/secretstream/noise"
	"github.com/keytunnel/keytunnel/udx"
)

// Handshaker runs hyperdht's Noise IK handshake (prologue NS_PEER_HANDSHAKE)
// for a Dial or Listener whose secret key this process does not hold:
// hyperdht's createHandshake option, which @hyperswarm/dht-relay uses to
// let non-custodial clients keep their keys while the relay's node finds
// the peer and punches. The node does everything else; the keys of the
// connection stay with whoever runs the handshake, so its connections are
// RawConns carrying secret-stream ciphertext.
//
// Payloads are encoded wire.NoisePayloads. The initiator calls
// WriteMessage (msg1) then ReadMessage (msg2); the responder ReadMessage
// (msg1), then WriteMessage (msg2). Calls never overlap. A failed
// ReadMessage on the responder side (the remote key refused, say) leaves
// the client unanswered, as hyperdht does.
//
// A Listener's handshakes (ListenOptions.Handshakes) live as long as the
// client's slot: if one is an io.Closer, the node calls Close when the
// slot is freed, 10 s after its connection was delivered or at once when
// the attempt is abandoned, so the owner can drop its state. DialRaw's
// Handshaker stays the caller's.
type Handshaker interface {
	WriteMessage(ctx context.Context, payload []byte) (msg []byte, err error)
	ReadMessage(ctx context.Context, msg []byte) (payload []byte, err error)
	// RemotePublicKey is the peer's static key: known from the start to
	// an initiator, after ReadMessage to a responder.
	RemotePublicKey() key.PublicKey
	// Result is valid after both messages.
	Result() (HandshakeResult, error)
}

// HandshakeResult is what the node needs from a finished handshake.
type HandshakeResult struct {
	RemotePublicKey key.PublicKey
	// HolepunchSecret keys the PEER_HOLEPUNCH payloads (BLAKE2b of the
	// handshake hash under NS_PEER_HOLEPUNCH).
	HolepunchSecret [32]byte
	// Keys are the transport keys and hash when the handshake ran in this
	// process; nil when they stay with the Handshaker's owner, whose
	// connections are then RawConns.
	Keys *noise.Result
}

// Signer signs announce and unannounce records for a public key whose
// secret key is elsewhere: hyperdht's signAnnounce and signUnannounce
// options.
type Signer interface {
	// SignRecord returns the Ed25519 signature of
	// wire.AnnounceSignable(ns, target, nodeID, token, peer, nil); ns is
	// wire.NSAnnounce or wire.NSUnannounce, nodeID and token are the
	// storing node's.
	SignRecord(ctx context.Context, ns, target, nodeID, token [32]byte, peer *wire.Peer) ([64]byte, error)
}

// KeySigner signs with a key pair held in this process.
func KeySigner(kp key.KeyPair) Signer { return keySigner{kp} }

type keySigner struct{ kp key.KeyPair }

func (s keySigner) SignRecord(_ context.Context, ns, target, nodeID, token [32]byte, peer *wire.Peer) ([64]byte, error) {
	if len(s.kp.Private) != ed25519.PrivateKeySize {
		return [64]byte{}, errNoSecretKey
	}
	msg := wire.AnnounceSignable(ns, target, nodeID, token[:], peer, nil)
	return [64]byte(ed25519.Sign(s.kp.Private, msg[:])), nil
}

// localHandshake is the handshake with the key pair in this process.
type localHandshake struct{ hs *noise.Handshake }

func newLocalHandshake(kp key.KeyPair, remote *key.PublicKey) (Handshaker, error) {
	if len(kp.Private) != ed25519.PrivateKeySize {
		return nil, errNoSecretKey
	}
	cfg := noise.Config{Pattern: noise.IK, KeyPair: kp, Prologue: wire.NSPeerHandshake[:]}
	if remote != nil {
		cfg.Initiator, cfg.RemoteKey = true, *remote
	}
	hs, err := noise.New(cfg)
	if err != nil {
		return nil, err
	}
	return localHandshake{hs}, nil
}

func (h localHandshake) WriteMessage(_ context.Context, payload []byte) ([]byte, error) {
	return h.hs.WriteMessage(nil, payload)
}

func (h localHandshake) ReadMessage(_ context.Context, msg []byte) ([]byte, error) {
	return h.hs.ReadMessage(nil, msg)
}

func (h localHandshake) RemotePublicKey() key.PublicKey { return h.hs.RemotePublicKey() }

func (h localHandshake) Result() (HandshakeResult, error) {
	res, err := h.hs.Result()
	if err != nil {
		return HandshakeResult{}, err
	}
	return HandshakeResult{RemotePublicKey: res.RemotePublicKey, HolepunchSecret: wire.HolepunchSecret(res.Hash[:]), Keys: &res}, nil
}

// closeHandshaker tells a Handshaker the node is done with it.
func closeHandshaker(h Handshaker) {
	if c, ok := h.(io.Closer); ok {
		c.Close()
	}
}

// RawConn is a connection whose handshake keys are elsewhere (a
// Handshaker's): the udx stream itself, carrying the secret-stream bytes
// its owner encrypts and decrypts. CloseWrite ends the stream, Close
// destroys it.
type RawConn struct {
	*udx.Stream
	hs     Handshaker
	remote key.PublicKey
}

// Handshaker is the handshake that produced the connection.
func (c *RawConn) Handshaker() Handshaker { return c.hs }

// RemotePublicKey is the peer's static key.
func (c *RawConn) RemotePublicKey() key.PublicKey { return c.remote }

func newRawConn(st *udx.Stream, hs Handshaker, remote key.PublicKey) *RawConn {
	// The owner's secret-stream may never send keepalives (ours does, on
	// Conns): udx heartbeats keep the NAT mappings of the path open.
	_ = st.SetKeepalive(connectionKeepAlive)
	return &RawConn{Stream: st, hs: hs, remote: remote}
}
