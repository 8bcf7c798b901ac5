package wire

import (
	"bytes"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/blake2b"

	"github.com/keytunnel/keytunnel/internal/key"
)

// StoreConfig sizes a Store. Zero fields take the reference's defaults.
type StoreConfig struct {
	// MaxSize bounds announce records, refreshes, bumps and router
	// entries per generation; mutables and immutables get MaxSize/2 each.
	MaxSize int
	// MaxAge is the nominal lifetime of records, refreshes, bumps and
	// router entries. When set, it also replaces the 48 h of mutables and
	// immutables, as hyperdht's maxAge option does.
	MaxAge time.Duration
}

// Forward is a router entry: a server that announced itself (target =
// H(publicKey)) to this node. PEER_HANDSHAKE and PEER_HOLEPUNCH messages for
// the target are forwarded to Relay, the address the announce came from;
// Record is the server's peer record, answered to FIND_PEER and added to
// LOOKUP replies.
type Forward struct {
	Relay  netip.AddrPort
	Record []byte
}

type refreshEntry struct {
	topic  [32]byte
	record []byte
	self   bool
}

// Store is the data a persistent hyperdht node keeps for others
// (lib/persistent.js plus the router's forwards): announce records per
// topic, router entries for self-announced servers, the refresh and bump
// side tables, and mutable and immutable values.
//
// Each request method takes the request's fields as dht-rpc decoded them
// (a nil value or token means absent; a non-nil empty one is present, as an
// empty Buffer is truthy in the reference) and returns how to answer:
//
//   - nil error: reply with the returned value (nil = null value);
//   - an ErrorCode (see ReplyCode): send a dht-rpc error reply with it;
//   - any other error: send nothing, the reference drops the request.
//
// Whether a reply carries a token and closer nodes is the caller's
// business: ANNOUNCE and UNANNOUNCE replies carry neither, all others both.
// Callers must not call the methods on an ephemeral node (no id) and must
// drop requests that lack a target before calling.
//
// Memory is bounded as in the reference: every table has two generations
// of at most MaxSize (or MaxSize/2) entries, and stored records are at most
// 51 bytes. Mutable and immutable values are limited only by what one
// dht-rpc packet can carry, as in the reference.
//
// A Store is safe for concurrent use. Methods take the current time
// instead of reading a clock; times should not go backwards.
type Store struct {
	mu         sync.Mutex
	records    *recordCache[[32]byte, key.PublicKey]
	forwards   *genCache[[32]byte, Forward]
	refreshes  *genCache[[32]byte, refreshEntry]
	bumps      *genCache[[32]byte, uint64]
	mutables   *genCache[[32]byte, []byte]
	immutables *genCache[[32]byte, []byte]
}

// NewStore returns an empty store whose expiry timers start at now.
func NewStore(cfg StoreConfig, now time.Time) *Store {
	maxSize := cfg.MaxSize
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	maxAge, longAge := cfg.MaxAge, cfg.MaxAge
	if maxAge <= 0 {
		maxAge, longAge = DefaultMaxAge, DefaultMutableMaxAge
	}
	half := max(maxSize/2, 1)
	return &Store{
		records:    newRecordCache[[32]byte, key.PublicKey](maxSize, maxAge, now),
		forwards:   newGenCache[[32]byte, Forward](maxSize, maxAge, now),
		refreshes:  newGenCache[[32]byte, refreshEntry](maxSize, maxAge, now),
		bumps:      newGenCache[[32]byte, uint64](maxSize, maxAge, now),
		mutables:   newGenCache[[32]byte, []byte](half, longAge, now),
		immutables: newGenCache[[32]byte, []byte](half, longAge, now),
	}
}

func (s *Store) advance(now time.Time) {
	s.records.advance(now)
	s.forwards.advance(now)
	s.refreshes.advance(now)
	s.bumps.advance(now)
	s.mutables.advance(now)
	s.immutables.advance(now)
}

// Lookup answers LOOKUP for topic: up to MaxLookupRecords random records,
// plus the router entry's record if there is room, with the topic's bump.
// It returns nil (a null reply value) when there is nothing.
func (s *Store) Lookup(topic [32]byte, now time.Time) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	recs := s.records.get(topic, MaxLookupRecords)
	bump, _ := s.bumps.get(topic)
	if fwd, ok := s.forwards.get(topic); ok && len(recs) < MaxLookupRecords {
		recs = append(recs, fwd.Record)
	}
	if len(recs) == 0 {
		return nil
	}
	return AppendLookupRawReply(nil, recs, bump)
}

// FindPeer answers FIND_PEER: the self-announced server's record, or nil.
func (s *Store) FindPeer(target [32]byte, now time.Time) []byte {
	fwd, ok := s.Forward(target, now)
	if !ok {
		return nil
	}
	return fwd.Record
}

// Forward returns the router entry for target, for forwarding
// PEER_HANDSHAKE and PEER_HOLEPUNCH. Reading it keeps it alive.
func (s *Store) Forward(target [32]byte, now time.Time) (Forward, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	return s.forwards.get(target)
}

// RetainForward registers a server listening on this node itself: its
// entry never expires, and announces from elsewhere for the same target do
// not replace it (the reference's router.set with onpeerhandshake). Relay
// is then normally the zero address. Lookups and FIND_PEER include Record.
func (s *Store) RetainForward(target [32]byte, fwd Forward, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	fwd.Record = bytes.Clone(fwd.Record)
	s.forwards.retain(target, fwd)
}

// DeleteForward removes the router entry for target, retained or not.
func (s *Store) DeleteForward(target [32]byte, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	s.forwards.delete(target)
}

// Announce handles ANNOUNCE from address from. nodeID is this node's id,
// which announce signatures are bound to. On success the reply is a null
// value without token or closer nodes.
func (s *Store) Announce(topic [32]byte, token []byte, value []byte, nodeID [32]byte, from netip.AddrPort, now time.Time) error {
	if token == nil || value == nil {
		return ErrMissingField
	}
	ann, err := DecodeAnnounce(value)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)

	if ann.Peer == nil {
		if ann.Refresh == nil {
			return ErrMissingField
		}
		return s.refresh(*ann.Refresh, from)
	}
	if !VerifyAnnounce(NSAnnounce, topic, nodeID, token, &ann) {
		return ErrBadSignature
	}
	// The signature covers every relay address; only then is the record
	// cut down so a stored record stays small.
	peer := *ann.Peer
	if len(peer.RelayAddresses) > MaxRelayAddresses {
		peer.RelayAddresses = peer.RelayAddresses[:MaxRelayAddresses]
	}
	record := peer.Append(make([]byte, 0, 51))
	self := blake2b.Sum256(peer.PublicKey[:]) == topic
	if self {
		s.forwards.set(topic, Forward{Relay: from, Record: record})
		s.records.remove(topic, peer.PublicKey)
	} else {
		cur, _ := s.bumps.get(topic)
		limit := now.Add(MaxBumpDrift).UnixMilli()
		if ann.Bump > cur && limit >= 0 && ann.Bump <= uint64(limit) {
			s.bumps.set(topic, ann.Bump)
		}
		s.records.add(topic, peer.PublicKey, record)
	}
	if ann.Refresh != nil {
		s.refreshes.set(*ann.Refresh, refreshEntry{topic: topic, record: record, self: self})
	}
	return nil
}

// refresh re-stores the record remembered under H(token) and re-keys it to
// token, so the next refresh must reveal token's preimage. No signature is
// checked: knowing the preimage is the proof.
func (s *Store) refresh(token [32]byte, from netip.AddrPort) error {
	active := blake2b.Sum256(token[:])
	r, ok := s.refreshes.get(active)
	if !ok {
		return ErrUnknownRefresh
	}
	var pk key.PublicKey
	copy(pk[:], r.record)
	if r.self {
		s.forwards.set(r.topic, Forward{Relay: from, Record: r.record})
		s.records.remove(r.topic, pk)
	} else {
		s.records.add(r.topic, pk, r.record)
	}
	s.refreshes.delete(active)
	s.refreshes.set(token, r)
	return nil
}

// Unannounce handles UNANNOUNCE: with a valid signature it removes the
// announcer's record under topic. On success the reply is a null value
// without token or closer nodes.
func (s *Store) Unannounce(topic [32]byte, token []byte, value []byte, nodeID [32]byte, now time.Time) error {
	if token == nil || value == nil {
		return ErrMissingField
	}
	ann, err := DecodeAnnounce(value)
	if err != nil {
		return err
	}
	if ann.Peer == nil || ann.Signature == nil {
		return ErrMissingField
	}
	if !VerifyAnnounce(NSUnannounce, topic, nodeID, token, &ann) {
		return ErrBadSignature
	}
	s.Remove(topic, ann.Peer.PublicKey, now)
	return nil
}

// Remove drops pk's record under topic, and the router entry if topic is
// H(pk). The node calls it directly when one of its own servers
// unannounces.
func (s *Store) Remove(topic [32]byte, pk key.PublicKey, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	if blake2b.Sum256(pk[:]) == topic {
		s.forwards.delete(topic)
	}
	s.records.remove(topic, pk)
}

// MutableGet handles MUTABLE_GET: value is the lowest seq wanted. The
// reply is the stored MutableGetResponse if its seq is at least that,
// otherwise nil.
func (s *Store) MutableGet(target [32]byte, value []byte, now time.Time) ([]byte, error) {
	if value == nil {
		return nil, ErrMissingField
	}
	seq, err := DecodeMutableGetRequest(value)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	stored, ok := s.mutables.get(target)
	if !ok {
		return nil, nil
	}
	if r, err := DecodeMutableGetResponse(stored); err != nil || r.Seq < seq {
		return nil, nil
	}
	return stored, nil
}

// MutablePut handles MUTABLE_PUT. A put whose seq is lower than the stored
// one fails with ErrorSeqTooLow; one with the same seq and a different
// value fails with ErrorSeqReused (same seq and value is accepted again).
// Malformed, mis-targeted or badly signed puts are dropped.
func (s *Store) MutablePut(target [32]byte, token []byte, value []byte, now time.Time) error {
	if token == nil || value == nil {
		return ErrMissingField
	}
	p, err := DecodeMutablePutRequest(value)
	if err != nil {
		return err
	}
	if blake2b.Sum256(p.PublicKey[:]) != target {
		return ErrTargetMismatch
	}
	if !VerifyMutable(p.PublicKey, p.Signature, p.Seq, p.Value) {
		return ErrBadSignature
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	if stored, ok := s.mutables.get(target); ok {
		if cur, err := DecodeMutableGetResponse(stored); err == nil {
			if cur.Seq == p.Seq && !bytes.Equal(cur.Value, p.Value) {
				return ErrorSeqReused
			}
			if p.Seq < cur.Seq {
				return ErrorSeqTooLow
			}
		}
	}
	r := MutableGetResponse{Seq: p.Seq, Value: p.Value, Signature: p.Signature}
	s.mutables.set(target, r.Append(nil))
	return nil
}

// ImmutableGet handles IMMUTABLE_GET: the stored value or nil.
func (s *Store) ImmutableGet(target [32]byte, now time.Time) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	v, _ := s.immutables.get(target)
	return v
}

// ImmutablePut handles IMMUTABLE_PUT: the value is stored if target is
// its hash.
func (s *Store) ImmutablePut(target [32]byte, token []byte, value []byte, now time.Time) error {
	if token == nil || value == nil {
		return ErrMissingField
	}
	if blake2b.Sum256(value) != target {
		return ErrTargetMismatch
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	s.immutables.set(target, bytes.Clone(value))
	return nil
}

// StoreStats counts a Store's entries across both generations.
type StoreStats struct {
	Records, Forwards, Refreshes, Bumps, Mutables, Immutables int
}

// Stats returns the current counts (after expiring what is due at now).
func (s *Store) Stats(now time.Time) StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now)
	return StoreStats{
		Records: s.records.len(), Forwards: s.forwards.len(), Refreshes: s.refreshes.len(),
		Bumps: s.bumps.len(), Mutables: s.mutables.len(), Immutables: s.immutables.len(),
	}
}

func (s StoreStats) String() string {
	return fmt.Sprintf("records=%d forwards=%d refreshes=%d bumps=%d mutables=%d immutables=%d",
		s.Records, s.Forwards, s.Refreshes, s.Bumps, s.Mutables, s.Immutables)
}
