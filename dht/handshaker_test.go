package dht

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/secretstream"
	"github.com/keytunnel/keytunnel/secretstream/noise"
)

// remoteHandshake stands in for a handshake run in another process (a
// relayed client): it hides the keys from the node, and the test runs
// secret-stream over the RawConn with them.
type remoteHandshake struct {
	hs     *noise.Handshake
	steps  atomic.Int32
	closed atomic.Int32
}

func newRemoteHandshake(t testing.TB, kp key.KeyPair, remote *key.PublicKey) *remoteHandshake {
	cfg := noise.Config{Pattern: noise.IK, KeyPair: kp, Prologue: wire.NSPeerHandshake[:]}
	if remote != nil {
		cfg.Initiator, cfg.RemoteKey = true, *remote
	}
	hs, err := noise.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &remoteHandshake{hs: hs}
}

func (h *remoteHandshake) WriteMessage(_ context.Context, p []byte) ([]byte, error) {
	h.steps.Add(1)
	return h.hs.WriteMessage(nil, p)
}

func (h *remoteHandshake) ReadMessage(_ context.Context, m []byte) ([]byte, error) {
	h.steps.Add(1)
	return h.hs.ReadMessage(nil, m)
}

func (h *remoteHandshake) RemotePublicKey() key.PublicKey { return h.hs.RemotePublicKey() }

func (h *remoteHandshake) Result() (HandshakeResult, error) {
	res, err := h.hs.Result()
	if err != nil {
		return HandshakeResult{}, err
	}
	return HandshakeResult{RemotePublicKey: res.RemotePublicKey, HolepunchSecret: noise.HolepunchSecret(res.Hash)}, nil
}

func (h *remoteHandshake) Close() error { h.closed.Add(1); return nil }

// secure runs the owner's secret-stream over a RawConn.
func (h *remoteHandshake) secure(t testing.TB, c *RawConn) *Conn {
	t.Helper()
	res, err := h.hs.Result()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := secretstream.New(c, secretstream.Options{IsInitiator: res.IsInitiator, Handshake: &res, SendHeader: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	return conn
}

// countingSigner signs with a key pair the node never sees.
type countingSigner struct {
	kp key.KeyPair
	n  atomic.Int32
}

func (s *countingSigner) SignRecord(ctx context.Context, ns, target, nodeID, token [32]byte, peer *wire.Peer) ([64]byte, error) {
	s.n.Add(1)
	return KeySigner(s.kp).SignRecord(ctx, ns, target, nodeID, token, peer)
}

// TestRawHandshakes: a Listener and a Dial whose Noise handshakes and
// record signatures run outside the node (the node holds only public
// keys) interoperate with ordinary Dials and Listeners; the bytes on the
// RawConn are the owner's secret-stream.
func TestRawHandshakes(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 60*time.Second)
	srv := peerNode(t, tn, seedKey(1))
	cli := peerNode(t, tn, seedKey(2))
	skp := seedKey(3)
	signer := &countingSigner{kp: skp}
	var mu sync.Mutex
	var made []*remoteHandshake
	l, err := srv.Listen(ctx, key.KeyPair{Public: skp.Public}, &ListenOptions{Signer: signer, Handshakes: func() Handshaker {
		h := newRemoteHandshake(t, skp, nil)
		mu.Lock()
		made = append(made, h)
		mu.Unlock()
		return h
	}})
	if err != nil {
		t.Fatal(err)
	}
	if signer.n.Load() == 0 {
		t.Fatal("the listener announced without asking the Signer")
	}
	if _, err := l.AcceptConn(ctx); err != ErrRaw {
		t.Fatalf("AcceptConn on a raw listener: %v", err)
	}
	go func() {
		for {
			rc, err := l.AcceptRaw(context.Background())
			if err != nil {
				return
			}
			h, ok := rc.Handshaker().(*remoteHandshake)
			if !ok {
				t.Error("RawConn without its Handshaker")
				rc.Close()
				return
			}
			go func() {
				c := h.secure(t, rc)
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						c.Write(buf[:n])
					}
					if err != nil {
						c.CloseWrite()
						return
					}
				}
			}()
		}
	}()

	// An ordinary client reaches the raw listener.
	c, err := cli.Dial(ctx, skp.Public, nil)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, 1<<20)
	c.Close()

	// A raw client reaches the raw listener and an ordinary one.
	ckp := seedKey(4)
	plain, err := srv.Listen(ctx, seedKey(5), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	echo(t, plain)
	for _, pk := range []key.PublicKey{skp.Public, seedKey(5).Public} {
		h := newRemoteHandshake(t, ckp, &pk)
		rc, err := cli.DialRaw(ctx, pk, h, nil)
		if err != nil {
			t.Fatalf("DialRaw %s: %v", pk, err)
		}
		if rc.RemotePublicKey() != pk || h.steps.Load() != 2 {
			t.Fatalf("remote %s, %d handshake steps", rc.RemotePublicKey(), h.steps.Load())
		}
		c := h.secure(t, rc)
		if c.RemotePublicKey() != pk {
			t.Fatalf("secret-stream remote %s", c.RemotePublicKey())
		}
		roundTrip(t, c, 1<<20)
		c.Close()
	}
	if _, err := cli.DialRaw(ctx, skp.Public, nil, nil); err == nil {
		t.Fatal("DialRaw without a Handshaker succeeded")
	}

	// Close unannounces through the Signer and closes every handshake.
	before := signer.n.Load()
	l.Close()
	if signer.n.Load() == before {
		t.Fatal("Close did not ask the Signer to unannounce")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(made) < 2 {
		t.Fatalf("%d responder handshakes, want 2", len(made))
	}
	for i, h := range made {
		if h.closed.Load() != 1 {
			t.Fatalf("handshake %d closed %d times", i, h.closed.Load())
		}
	}
}

// TestUnannounceSigned: announce and unannounce records signed outside
// the node.
func TestUnannounceSigned(t *testing.T) {
	tn := testnet(t, 5)
	ctx := testCtx(t, 60*time.Second)
	n := peerNode(t, tn, seedKey(1))
	kp := seedKey(8)
	s := &countingSigner{kp: kp}
	pub := key.KeyPair{Public: kp.Public}
	topic := Hash([]byte("signed topic"))
	if err := n.Announce(ctx, topic, pub, nil, &AnnounceOptions{Signer: s}); err != nil {
		t.Fatal(err)
	}
	if !lookupFinds(t, ctx, tn.Nodes[2], topic, kp.Public) {
		t.Fatal("signed announce not found")
	}
	if err := n.UnannounceSigned(ctx, topic, kp.Public, s); err != nil {
		t.Fatal(err)
	}
	if lookupFinds(t, ctx, tn.Nodes[2], topic, kp.Public) {
		t.Fatal("still found after a signed unannounce")
	}
	// Without a Signer, a public key alone cannot announce.
	if err := n.Announce(ctx, topic, pub, nil, nil); err == nil && lookupFinds(t, ctx, tn.Nodes[2], topic, kp.Public) {
		t.Fatal("announced without a secret key")
	}
}

func lookupFinds(t testing.TB, ctx context.Context, n *Node, topic [32]byte, pk key.PublicKey) bool {
	t.Helper()
	s := n.Lookup(ctx, topic)
	defer s.Close()
	for {
		r, err := s.Next(ctx)
		if err != nil {
			return false
		}
		for _, p := range r.Peers {
			if p.PublicKey == pk {
				return true
			}
		}
	}
}
