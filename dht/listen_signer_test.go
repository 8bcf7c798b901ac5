package dht

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/wire"
)

type failingSigner struct{}

var errCannotSign = errors.New("cannot sign")

func (failingSigner) SignRecord(context.Context, [32]byte, [32]byte, [32]byte, [32]byte, *wire.Peer) ([64]byte, error) {
	return [64]byte{}, errCannotSign
}

// A Listen whose Signer cannot sign its first announce fails, saying why,
// and leaves the key free on the node (issue #13: it used to return a
// listener that held the key while nothing was announced).
func TestListenUnsignableFails(t *testing.T) {
	tn := testnet(t, 3)
	ctx := testCtx(t, 60*time.Second)
	srv := peerNode(t, tn, seedKey(1))
	_, err := srv.Listen(ctx, seedKey(4), &ListenOptions{Signer: failingSigner{}})
	if !errors.Is(err, ErrAnnounceNotSigned) || !errors.Is(err, errCannotSign) {
		t.Fatalf("listen with a failing signer: %v, want ErrAnnounceNotSigned", err)
	}
	l, err := srv.Listen(ctx, seedKey(4), nil)
	if err != nil {
		t.Fatalf("the key's own listen afterwards: %v", err)
	}
	l.Close()
}
