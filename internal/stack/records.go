package stack

import (
	"context"
	"errors"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
)

// Records is what a Network offers for mutable DHT records (hyperdht's
// mutablePut and mutableGet), such as the record holesail-server publishes
// for its clients. A DHT node has them; a dht-relay client does not, since
// the relay protocol carries no record commands.
type Records interface {
	// PutRecord stores value under kp's public key, signed by kp, with a
	// sequence number one above the record already there (or the same
	// number when the value has not changed), as holesail-server does.
	PutRecord(ctx context.Context, kp key.KeyPair, value []byte) error
	// GetRecord returns the latest record under pk; dht.ErrNotFound if
	// there is none.
	GetRecord(ctx context.Context, pk key.PublicKey) ([]byte, error)
}

var _ Records = (*dhtNetwork)(nil)

func (n *dhtNetwork) GetRecord(ctx context.Context, pk key.PublicKey) ([]byte, error) {
	r, err := n.Node.MutableGet(ctx, pk, 0, true)
	if err != nil {
		return nil, err
	}
	return r.Value, nil
}

func (n *dhtNetwork) PutRecord(ctx context.Context, kp key.KeyPair, value []byte) error {
	var seq uint64
	old, err := n.Node.MutableGet(ctx, kp.Public, 0, true)
	switch {
	case err == nil && string(old.Value) == string(value):
		seq = old.Seq
	case err == nil:
		seq = old.Seq + 1
	case !errors.Is(err, dht.ErrNotFound):
		return err
	}
	return n.Node.MutablePut(ctx, kp, value, seq)
}
