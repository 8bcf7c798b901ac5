package dhtrelay

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// No squatting through a Go relay (issue #13): a non-custodial client
// that names someone else's key in listen, and cannot sign for it, gets
// no listener on the relay's node (listening, then closed at once); a Go
// client listening with a key pair whose secret half is not the public
// key's gets ErrListenRefused; and the key's owner can then listen
// through the same relay, and be reached. Before the relay asked for
// proof, the squatter held the key and the owner's listen failed with
// KEYPAIR_ALREADY_USED.
func TestNoSquattingThroughGoRelay(t *testing.T) {
	tn := testnet(t, 3)
	relayNode := peerNode(t, tn)
	ctx := testCtx(t, 90*time.Second)
	s, url := goRelay(t, relayNode, "tcp", ServerOptions{RequestTimeout: time.Second})
	owner := newKey(t)

	// The squatter speaks the protocol by hand and answers the relay's
	// signature requests with garbage.
	f, _ := serveRaw(t, s)
	mc := newMsgClient(t, f)
	mc.send(t, Handshake{PublicKey: newKey(t).Public})
	mc.send(t, Listen{Alias: 7, PublicKey: owner.Public})
	closed := false
	for deadline := time.After(20 * time.Second); !closed; {
		select {
		case m := <-mc.msgs:
			switch m := m.(type) {
			case SignAnnounce:
				mc.send(t, Signature{ID: m.ID, Signature: make([]byte, 64)})
			case Closed:
				closed = true
			}
		case <-deadline:
			t.Fatal("the squatter's listen was not closed: the relay's node holds a key the client cannot sign for")
		}
	}

	// A Go client with the owner's public key but another secret key.
	other := newKey(t)
	fake := key.KeyPair{Public: owner.Public, Private: other.Private}
	_, err := dialClient(t, url, ClientOptions{NonCustodial: true}).Listen(ctx, fake, nil)
	if !errors.Is(err, ErrListenRefused) {
		t.Fatalf("listen with a key pair that does not match: %v, want ErrListenRefused", err)
	}

	// The owner listens through the same relay, and a UDP peer reaches it.
	l, err := dialClient(t, url, ClientOptions{NonCustodial: true}).Listen(ctx, owner, nil)
	if err != nil {
		t.Fatalf("the owner's listen after the squatters: %v", err)
	}
	defer l.Close()
	go echoConns(func() (net.Conn, error) { return l.Accept() })
	udpEcho(t, ctx, peerNode(t, tn), owner.Public, 1<<10)
}
