package dht

import (
	"context"
	"errors"
	"io"
	"iter"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
)

// Reply is what every streamed result carries about the node that sent it.
type Reply struct {
	From   netip.AddrPort
	FromID *rpc.ID // nil if the node is ephemeral
	To     netip.AddrPort
	Token  *[32]byte
	// Hops is how many requests deep the node was found (1: a node the
	// query started from).
	Hops int
}

func replyOf(r *rpc.Response) Reply {
	return Reply{From: r.From, FromID: r.FromID, To: r.To, Token: r.Token, Hops: r.Hops}
}

// LookupReply is one node's answer to LOOKUP: the peers it stores.
type LookupReply struct {
	Reply
	Peers []wire.Peer
	Bump  uint64
}

// PeerReply is one node's answer to FIND_PEER.
type PeerReply struct {
	Reply
	Peer wire.Peer
}

// Stream is a running query whose replies are decoded as T. Replies
// without a value, or whose value does not decode, are skipped, as the
// reference's map functions skip them.
type Stream[T any] struct {
	q   *rpc.Query
	dec func(*rpc.Response) (T, bool)
}

// Next returns the next result, io.EOF once the query ended, or the
// query's error.
func (s *Stream[T]) Next(ctx context.Context) (T, error) {
	for {
		r, err := s.q.Next(ctx)
		if err != nil {
			var zero T
			return zero, err
		}
		if v, ok := s.dec(r); ok {
			return v, nil
		}
	}
}

// All iterates over the results until the query ends; check Err after.
func (s *Stream[T]) All(ctx context.Context) iter.Seq[T] {
	return func(yield func(T) bool) {
		for {
			v, err := s.Next(ctx)
			if err != nil || !yield(v) {
				return
			}
		}
	}
}

// Err is the query's result once it has ended.
func (s *Stream[T]) Err() error { return s.q.Err() }

// Close cancels the query.
func (s *Stream[T]) Close() { s.q.Close() }

// Query exposes the underlying query (closest replies, counts).
func (s *Stream[T]) Query() *rpc.Query { return s.q }

func decodeLookup(r *rpc.Response) (LookupReply, bool) {
	if r.Value == nil {
		return LookupReply{}, false
	}
	l, err := wire.DecodeLookupRawReply(r.Value)
	if err != nil {
		return LookupReply{}, false
	}
	return LookupReply{Reply: replyOf(r), Peers: l.Peers, Bump: l.Bump}, true
}

// Lookup asks the nodes closest to topic for the peers announced under it
// and streams their answers as they arrive.
func (n *Node) Lookup(ctx context.Context, topic [32]byte) *Stream[LookupReply] {
	q := n.rpc.Query(ctx, rpc.ID(topic), uint64(wire.CmdLookup), nil, nil)
	return &Stream[LookupReply]{q: q, dec: decodeLookup}
}

// FindPeer looks for the nodes a server with publicKey announced itself
// to; each answer carries the server's record (its relay addresses).
func (n *Node) FindPeer(ctx context.Context, publicKey key.PublicKey) *Stream[PeerReply] {
	q := n.rpc.Query(ctx, rpc.ID(Hash(publicKey[:])), uint64(wire.CmdFindPeer), nil, nil)
	return &Stream[PeerReply]{q: q, dec: func(r *rpc.Response) (PeerReply, bool) {
		if r.Value == nil {
			return PeerReply{}, false
		}
		p, err := wire.DecodePeer(r.Value)
		if err != nil {
			return PeerReply{}, false
		}
		return PeerReply{Reply: replyOf(r), Peer: p}, true
	}}
}

// drain reads and drops a query's replies until it ends, and returns its
// result.
func drain(ctx context.Context, q *rpc.Query) error {
	for {
		if _, err := q.Next(ctx); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// AnnounceOptions adjusts Announce.
type AnnounceOptions struct {
	// Bump is an unsigned hint stored per topic (a wall-clock time in ms).
	Bump uint64
	// Signer, when set, signs the records instead of kp's secret key.
	Signer Signer
}

// Announce stores kp's public key with relayAddresses under topic on the
// (up to 20) nodes closest to it. Each announce is signed for the storing
// node's id and token, so it cannot be replayed elsewhere. Announcing under
// H(kp.Public) is a self-announce: those nodes then route handshakes to us.
func (n *Node) Announce(ctx context.Context, topic [32]byte, kp key.KeyPair, relayAddresses []netip.AddrPort, opts *AnnounceOptions) error {
	var bump uint64
	signer := KeySigner(kp)
	if opts != nil {
		bump = opts.Bump
		if opts.Signer != nil {
			signer = opts.Signer
		}
	}
	peer := &wire.Peer{PublicKey: kp.Public, RelayAddresses: relayAddresses}
	q := n.rpc.Query(ctx, rpc.ID(topic), uint64(wire.CmdLookup), nil, &rpc.QueryOptions{
		Commit: func(ctx context.Context, q *rpc.Query, r *rpc.Response) error {
			if r.Token == nil || r.FromID == nil {
				return rpc.ErrNoToken
			}
			ann := &wire.Announce{Peer: peer, Bump: bump}
			sig, err := signer.SignRecord(ctx, wire.NSAnnounce, topic, [32]byte(*r.FromID), *r.Token, peer)
			if err != nil {
				return err
			}
			ann.Signature = &sig
			return n.commitRequest(ctx, r, wire.CmdAnnounce, topic, ann.Append(nil))
		},
	})
	return drain(ctx, q)
}

func (n *Node) commitRequest(ctx context.Context, r *rpc.Response, cmd wire.Command, target [32]byte, value []byte) error {
	t := rpc.ID(target)
	res, err := n.rpc.Request(ctx, r.From, rpc.RequestOptions{Token: r.Token, Command: uint64(cmd), Target: &t, Value: value})
	if err != nil {
		return err
	}
	if res.Error != 0 {
		return &RemoteError{Code: res.Error}
	}
	return nil
}

// Unannounce removes kp's record under topic: locally, and from every node
// of a LOOKUP that reports it (or reports a full page of 20 peers, which
// may hide it).
func (n *Node) Unannounce(ctx context.Context, topic [32]byte, kp key.KeyPair) error {
	return n.UnannounceSigned(ctx, topic, kp.Public, KeySigner(kp))
}

// UnannounceSigned is Unannounce for publicKey, with the records signed
// by s.
func (n *Node) UnannounceSigned(ctx context.Context, topic [32]byte, publicKey key.PublicKey, s Signer) error {
	n.store.Remove(topic, publicKey, time.Now())

	peer := &wire.Peer{PublicKey: publicKey}
	q := n.rpc.Query(ctx, rpc.ID(topic), uint64(wire.CmdLookup), nil, nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		r, err := q.Next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		lr, ok := decodeLookup(r)
		if !ok || lr.Token == nil || lr.FromID == nil {
			continue
		}
		found := len(lr.Peers) >= wire.MaxLookupRecords || slices.ContainsFunc(lr.Peers, func(p wire.Peer) bool { return p.PublicKey == publicKey })
		if !found {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Signing may be a round trip (a relayed client's key).
			sig, err := s.SignRecord(ctx, wire.NSUnannounce, topic, [32]byte(*lr.FromID), *lr.Token, peer)
			if err != nil {
				return
			}
			ann := &wire.Announce{Peer: peer, Signature: &sig}
			_ = n.commitRequest(ctx, r, wire.CmdUnannounce, topic, ann.Append(nil))
		}()
	}
}

// MutablePut stores value under H(kp.Public) with sequence number seq on
// the closest nodes. It fails with ErrSeqTooLow or ErrSeqReused when every
// node that answered refused the seq.
func (n *Node) MutablePut(ctx context.Context, kp key.KeyPair, value []byte, seq uint64) error {
	target := Hash(kp.Public[:])
	req := &wire.MutablePutRequest{PublicKey: kp.Public, Seq: seq, Value: value, Signature: wire.SignMutable(kp, seq, value)}
	v := req.Append(nil)
	// The query part asks for seq 0: it only finds the closest nodes.
	q := n.rpc.Query(ctx, rpc.ID(target), uint64(wire.CmdMutableGet), wire.AppendMutableGetRequest(nil, 0), &rpc.QueryOptions{
		Commit: func(ctx context.Context, q *rpc.Query, r *rpc.Response) error {
			return n.commitRequest(ctx, r, wire.CmdMutablePut, target, v)
		},
	})
	return drain(ctx, q)
}

// MutableResult is a verified mutable record and the node it came from.
type MutableResult struct {
	Reply
	wire.MutableGetResponse
}

// MutableGet finds the record of publicKey with a seq of at least seq.
// With latest it returns the highest valid seq any node has; otherwise
// the first valid record. Records whose signature does not verify are
// ignored. ErrNotFound if none.
func (n *Node) MutableGet(ctx context.Context, publicKey key.PublicKey, seq uint64, latest bool) (*MutableResult, error) {
	target := Hash(publicKey[:])
	q := n.rpc.Query(ctx, rpc.ID(target), uint64(wire.CmdMutableGet), wire.AppendMutableGetRequest(nil, seq), nil)
	defer q.Close()
	var best *MutableResult
	for {
		r, err := q.Next(ctx)
		if err != nil {
			if !errors.Is(err, io.EOF) && best == nil {
				return nil, err
			}
			break
		}
		if r.Value == nil {
			continue
		}
		rec, err := wire.DecodeMutableGetResponse(r.Value)
		if err != nil || rec.Seq < seq || (best != nil && rec.Seq <= best.Seq) || !wire.VerifyMutable(publicKey, rec.Signature, rec.Seq, rec.Value) {
			continue
		}
		best = &MutableResult{Reply: replyOf(r), MutableGetResponse: rec}
		if !latest {
			break
		}
	}
	if best == nil {
		return nil, ErrNotFound
	}
	best.Value = slices.Clone(best.Value)
	return best, nil
}

// ImmutablePut stores value under H(value) on the closest nodes and
// returns that hash.
func (n *Node) ImmutablePut(ctx context.Context, value []byte) ([32]byte, error) {
	target := Hash(value)
	q := n.rpc.Query(ctx, rpc.ID(target), uint64(wire.CmdImmutableGet), nil, &rpc.QueryOptions{
		Commit: func(ctx context.Context, q *rpc.Query, r *rpc.Response) error {
			return n.commitRequest(ctx, r, wire.CmdImmutablePut, target, value)
		},
	})
	return target, drain(ctx, q)
}

// ImmutableGet returns the first value found whose hash is target.
func (n *Node) ImmutableGet(ctx context.Context, target [32]byte) ([]byte, error) {
	q := n.rpc.Query(ctx, rpc.ID(target), uint64(wire.CmdImmutableGet), nil, nil)
	defer q.Close()
	for {
		r, err := q.Next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, ErrNotFound
			}
			return nil, err
		}
		if r.Value != nil && Hash(r.Value) == target {
			return slices.Clone(r.Value), nil
		}
	}
}
