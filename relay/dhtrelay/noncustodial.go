package dhtrelay

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
)

// A non-custodial client runs its Noise handshakes and signs its records
// itself (lib/handshake-proxy.js, lib/signee-proxy.js on the reference's
// relay). The relay's dht asks through the hooks below; each question is
// one message to the client and one answer back.

// await waits for the client's answer on ch, at most
// ServerOptions.RequestTimeout: the reference waits forever, but a client
// whose Noise state throws never answers, and the dht's attempt would hang
// with it.
func await[T any](ctx context.Context, c *serverClient, ch <-chan T) (T, error) {
	t := time.NewTimer(c.s.opts.RequestTimeout)
	defer t.Stop()
	var zero T
	select {
	case v := <-ch:
		return v, nil
	case <-t.C:
		return zero, errNoAnswer
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-c.ctx.Done():
		return zero, ErrClosed
	}
}

// relayHandshake is a dht.Handshaker whose Noise state is the client's.
type relayHandshake struct {
	c         *serverClient
	initiator bool
	stream    uint32 // initiator: the client's alias of the connecting stream
	server    uint32 // responder: the relay's alias of the server
	replies   chan NoiseReply

	// c.mu guards the rest.
	id      uint32 // 0 until the first request
	remote  key.PublicKey
	secret  [32]byte
	done    bool // the client reported the handshake complete
	claimed bool // an open or connection consumed it
	closed  bool
}

var _ dht.Handshaker = (*relayHandshake)(nil)

func (c *serverClient) newHandshake(initiator bool, stream, server uint32, remote key.PublicKey) *relayHandshake {
	return &relayHandshake{c: c, initiator: initiator, stream: stream, server: server, remote: remote, replies: make(chan NoiseReply, 1)}
}

// WriteMessage is noiseSend: the client writes the next message carrying
// payload.
func (h *relayHandshake) WriteMessage(ctx context.Context, payload []byte) ([]byte, error) {
	r, err := h.ask(ctx, func(id uint32) Message {
		m := NoiseSend{IsInitiator: h.initiator, ID: id, Payload: payload}
		if h.initiator {
			m.RemoteStreamAlias = h.stream
		}
		return m
	})
	if err != nil {
		return nil, err
	}
	if len(r.Payload) == 0 {
		return nil, fmt.Errorf("%w: noiseSend answered without a message", ErrProtocol)
	}
	return r.Payload, nil
}

// ReadMessage is noiseReceive: the client reads msg and returns its
// payload; an empty one is the client's firewall denying the peer.
func (h *relayHandshake) ReadMessage(ctx context.Context, msg []byte) ([]byte, error) {
	r, err := h.ask(ctx, func(id uint32) Message {
		m := NoiseReceive{IsInitiator: h.initiator, ID: id, Payload: msg}
		if !h.initiator {
			m.ServerAlias = h.server
		}
		return m
	})
	if err != nil {
		return nil, err
	}
	if len(r.Payload) == 0 {
		return nil, errHandshakeDenied
	}
	return r.Payload, nil
}

// ask sends one request and waits for its noiseReply.
func (h *relayHandshake) ask(ctx context.Context, build func(id uint32) Message) (NoiseReply, error) {
	c := h.c
	c.mu.Lock()
	if h.closed || c.ctx.Err() != nil {
		c.mu.Unlock()
		return NoiseReply{}, ErrClosed
	}
	if h.id == 0 {
		h.id = c.sess.NextID()
	}
	if err := c.sendLocked(build(h.id)); err != nil {
		c.mu.Unlock()
		return NoiseReply{}, err
	}
	c.noise[h.id] = h
	c.mu.Unlock()

	r, err := await(ctx, c, h.replies)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// The session would refuse the next request while this one
		// waits: the handshake is over.
		h.forgetLocked()
		return NoiseReply{}, err
	}
	if !h.initiator && !r.Complete && len(r.Payload) > 0 {
		h.remote = r.RemotePublicKey
	}
	if r.Complete {
		h.secret, h.done = r.HolepunchSecret, true
	}
	return r, nil
}

func (h *relayHandshake) RemotePublicKey() key.PublicKey {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	return h.remote
}

// Result has no Keys: the transport keys and hash stay with the client.
func (h *relayHandshake) Result() (dht.HandshakeResult, error) {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if !h.done {
		return dht.HandshakeResult{}, fmt.Errorf("%w: the client's handshake is not complete", ErrProtocol)
	}
	return dht.HandshakeResult{RemotePublicKey: h.remote, HolepunchSecret: h.secret}, nil
}

// Close is the dht dropping the handshake; unless an open or connection
// consumed it, the relay forgets it.
func (h *relayHandshake) Close() error {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.forgetLocked()
	return nil
}

func (h *relayHandshake) forgetLocked() {
	if h.closed {
		return
	}
	h.closed = true
	if h.id == 0 {
		return
	}
	if h.c.noise[h.id] == h {
		delete(h.c.noise, h.id)
	}
	if !h.claimed {
		h.c.sess.ForgetRequest(h.id)
	}
}

// claimLocked takes a completed handshake for the open or connection
// about to name it.
func (h *relayHandshake) claimLocked(c *serverClient) (uint32, bool) {
	if h == nil || h.c != c || !h.done || h.claimed || h.closed {
		return 0, false
	}
	h.claimed = true
	if c.noise[h.id] == h {
		delete(c.noise, h.id)
	}
	return h.id, true
}

// onNoiseReply hands a reply to the handshake waiting for it (c.mu held;
// the session has matched it to an outstanding request).
func (c *serverClient) onNoiseReplyLocked(id uint32, r NoiseReply) {
	if h := c.noise[id]; h != nil {
		select {
		case h.replies <- r:
		default:
		}
	}
}

// relaySigner is a dht.Signer whose key is the client's: each record
// becomes a signAnnounce or signUnannounce to the client.
type relaySigner struct {
	c      *serverClient
	signee uint32 // the client's query id or server alias
	pk     key.PublicKey
}

func (c *serverClient) signer(signee uint32, pk key.PublicKey) dht.Signer {
	return &relaySigner{c: c, signee: signee, pk: pk}
}

func (s *relaySigner) SignRecord(ctx context.Context, ns, target, nodeID, token [32]byte, peer *wire.Peer) ([64]byte, error) {
	c := s.c
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return [64]byte{}, ErrClosed
	}
	id := c.sess.NextID()
	// The reference's relay puts the peer object here and fails to encode
	// the message (package doc); the addresses are what the client signs.
	req := SignAnnounce{ID: id, Signee: s.signee, Token: token, PeerID: nodeID[:], RelayAddresses: peer.RelayAddresses}
	var m Message = req
	if ns == wire.NSUnannounce {
		m = SignUnannounce(req)
	}
	if err := c.sendLocked(m); err != nil {
		c.mu.Unlock()
		return [64]byte{}, err
	}
	c.signatures[id] = ch
	c.mu.Unlock()

	sig, err := await(ctx, c, ch)
	c.mu.Lock()
	if c.signatures[id] == ch {
		delete(c.signatures, id)
		c.sess.ForgetRequest(id)
	}
	c.mu.Unlock()
	if err != nil {
		return [64]byte{}, err
	}
	// A bad signature would only be refused by the storing node; checking
	// here names the culprit.
	msg := wire.AnnounceSignable(ns, target, nodeID, token[:], peer, nil)
	if len(sig) != 64 || !wire.Verify(s.pk, msg[:], sig) {
		return [64]byte{}, errBadSignature
	}
	return [64]byte(sig), nil
}

// proveKey makes a non-custodial client prove it holds the secret key of
// pk before the relay's node listens on it: the client signs an announce
// record for a random node id and token (what it signs for any announce,
// so Node and Go clients answer it as they are), and the relay verifies
// the signature. Without it, anyone could make the relay's node listen on
// a key they do not own, and the owner's own listen through this relay
// would then fail with KEYPAIR_ALREADY_USED.
func (c *serverClient) proveKey(ctx context.Context, signee uint32, pk key.PublicKey) error {
	var nodeID, token [32]byte
	rand.Read(nodeID[:])
	rand.Read(token[:])
	_, err := c.signer(signee, pk).SignRecord(ctx, wire.NSAnnounce, dht.Hash(pk[:]), nodeID, token, &wire.Peer{PublicKey: pk})
	if err != nil {
		return fmt.Errorf("dhtrelay: the client did not prove it holds the key it listens on: %w", err)
	}
	return nil
}

// dialNonCustodial dials for a non-custodial client (c.mu held): the
// client runs the handshake, the relay gets the udx stream and relays the
// client's secret-stream over it. alias is the relay's.
func (c *serverClient) dialNonCustodial(v Connect, alias uint32) {
	h := c.newHandshake(true, v.Alias, 0, v.RemotePublicKey)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		conn, err := c.s.node.DialRaw(c.ctx, v.RemotePublicKey, h, nil)
		c.mu.Lock()
		if err == nil && c.ctx.Err() != nil {
			err = ErrClosed
		}
		var id uint32
		if err == nil {
			var ok bool
			if id, ok = h.claimLocked(c); !ok {
				err = fmt.Errorf("%w: the handshake was dropped", ErrProtocol)
			}
		}
		if err != nil {
			h.forgetLocked()
			if conn != nil {
				conn.Close()
			}
			if c.ctx.Err() == nil {
				c.s.log.Debug("dhtrelay: connect failed", "remote", c.remote, "peer", v.RemotePublicKey, "err", err)
				_ = c.sendLocked(Destroy{RemoteAlias: v.Alias, Error: errText(err)})
			}
			c.mu.Unlock()
			return
		}
		st := c.newStreamLocked(alias, conn, conn.CloseWrite)
		err = c.sendLocked(Open{Alias: alias, RemoteAlias: v.Alias, HandshakeID: id})
		c.mu.Unlock()
		if err != nil {
			conn.Close()
			return
		}
		c.pump(st)
	}()
}

// acceptFor takes the next connection of a client's server and drafts its
// connection message (alias and handshake id still to fill in).
func (c *serverClient) acceptFor(l *dht.Listener, server uint32, custodial bool) (net.Conn, Connection, error) {
	if custodial {
		conn, err := l.AcceptConn(c.ctx)
		if err != nil {
			return nil, Connection{}, err
		}
		return conn, Connection{Custodial: true, ServerAlias: server, RemotePublicKey: conn.RemotePublicKey(), HandshakeHash: conn.HandshakeHash()}, nil
	}
	rc, err := l.AcceptRaw(c.ctx)
	if err != nil {
		return nil, Connection{}, err
	}
	return rc, Connection{ServerAlias: server, RemotePublicKey: rc.RemotePublicKey()}, nil
}
