package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

var (
	t0     = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	nodeID = fill32(0xd1)
	token  = bytes.Repeat([]byte{0x70}, 32)
	from   = netip.MustParseAddrPort("9.8.7.6:5000")
)

func kpN(n byte) key.KeyPair { return key.FromSeed(fill32(n)) }

// announceValue builds a signed ANNOUNCE value as a client would.
func announceValue(kp key.KeyPair, topic [32]byte, relays []netip.AddrPort, bump uint64, refresh *[32]byte) []byte {
	if relays == nil {
		relays = []netip.AddrPort{}
	}
	a := &Announce{Peer: &Peer{PublicKey: kp.Public, RelayAddresses: relays}, Refresh: refresh, Bump: bump}
	sig := SignAnnounce(kp, topic, nodeID, token, a)
	a.Signature = &sig
	return a.Append(nil)
}

func unannounceValue(kp key.KeyPair, topic [32]byte) []byte {
	a := &Announce{Peer: &Peer{PublicKey: kp.Public, RelayAddresses: []netip.AddrPort{}}}
	sig := SignUnannounce(kp, topic, nodeID, token, a)
	a.Signature = &sig
	return a.Append(nil)
}

func lookup(t *testing.T, s *Store, topic [32]byte, now time.Time) LookupRawReply {
	t.Helper()
	v := s.Lookup(topic, now)
	if v == nil {
		return LookupRawReply{}
	}
	r, err := DecodeLookupRawReply(v)
	if err != nil {
		t.Fatalf("lookup reply does not decode: %v", err)
	}
	return r
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestStoreAnnounceLookup(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	topic := fill32(0x10)
	kp := kpN(1)
	relays := []netip.AddrPort{ap("1.0.0.1:1"), ap("1.0.0.2:2"), ap("1.0.0.3:3"), ap("1.0.0.4:4"), ap("1.0.0.5:5")}
	mustOK(t, s.Announce(topic, token, announceValue(kp, topic, relays, 0, nil), nodeID, from, t0))
	r := lookup(t, s, topic, t0)
	if len(r.Peers) != 1 || r.Peers[0].PublicKey != kp.Public || len(r.Peers[0].RelayAddresses) != MaxRelayAddresses ||
		r.Peers[0].RelayAddresses[2] != relays[2] {
		t.Fatalf("lookup %+v", r)
	}
	if s.Lookup(fill32(0x11), t0) != nil {
		t.Fatal("lookup of an empty topic must be a null value")
	}
	if s.FindPeer(topic, t0) != nil {
		t.Fatal("a plain announce is not a router entry")
	}
	// Unannounce removes it; an unannounce signed for another node does not.
	other := kpN(2)
	mustOK(t, s.Announce(topic, token, announceValue(other, topic, nil, 0, nil), nodeID, from, t0))
	if err := s.Unannounce(topic, token, unannounceValue(kp, topic), fill32(0xd2), t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("unannounce for another node id: %v", err)
	}
	mustOK(t, s.Unannounce(topic, token, unannounceValue(kp, topic), nodeID, t0))
	if r := lookup(t, s, topic, t0); len(r.Peers) != 1 || r.Peers[0].PublicKey != other.Public {
		t.Fatalf("after unannounce: %+v", r)
	}
}

func TestStoreAnnounceRejects(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	topic := fill32(0x10)
	kp := kpN(1)
	good := announceValue(kp, topic, nil, 0, nil)
	forged := bytes.Clone(good)
	forged[len(forged)-1] ^= 1
	unsigned := (&Announce{Peer: &Peer{PublicKey: kp.Public, RelayAddresses: []netip.AddrPort{}}}).Append(nil)
	for _, c := range []struct {
		name  string
		topic [32]byte
		token []byte
		value []byte
		id    [32]byte
		want  error
	}{
		{"forged signature", topic, token, forged, nodeID, ErrBadSignature},
		{"other topic", fill32(0x12), token, good, nodeID, ErrBadSignature},
		{"other token", topic, bytes.Repeat([]byte{1}, 32), good, nodeID, ErrBadSignature},
		{"other node", topic, token, good, fill32(0xd2), ErrBadSignature},
		{"unannounce signature", topic, token, unannounceValue(kp, topic), nodeID, ErrBadSignature},
		{"no signature", topic, token, unsigned, nodeID, ErrBadSignature},
		{"no token", topic, nil, good, nodeID, ErrMissingField},
		{"no value", topic, token, nil, nodeID, ErrMissingField},
		{"empty value", topic, token, []byte{}, nodeID, ErrDecode},
		{"truncated", topic, token, good[:40], nodeID, ErrDecode},
		{"nothing announced", topic, token, []byte{0}, nodeID, ErrMissingField},
	} {
		err := s.Announce(c.topic, c.token, c.value, c.id, from, t0)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if _, ok := ReplyCode(err); ok {
			t.Errorf("%s: announce failures are silent, not error replies", c.name)
		}
	}
	if st := s.Stats(t0); st.Records != 0 || st.Forwards != 0 {
		t.Fatalf("rejected announces stored something: %v", st)
	}
}

func TestStoreSelfAnnounce(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	kp := kpN(3)
	target := blakeSum(kp.Public[:])
	mustOK(t, s.Announce(target, token, announceValue(kp, target, []netip.AddrPort{ap("4.4.4.4:4")}, 0, nil), nodeID, from, t0))
	fwd, ok := s.Forward(target, t0)
	if !ok || fwd.Relay != from {
		t.Fatalf("forward %+v %v", fwd, ok)
	}
	p, err := DecodePeer(s.FindPeer(target, t0))
	if err != nil || p.PublicKey != kp.Public || p.RelayAddresses[0] != ap("4.4.4.4:4") {
		t.Fatalf("find peer %+v %v", p, err)
	}
	if r := lookup(t, s, target, t0); len(r.Peers) != 1 || r.Peers[0].PublicKey != kp.Public {
		t.Fatalf("lookup must include the router record: %+v", r)
	}
	if st := s.Stats(t0); st.Records != 0 {
		t.Fatalf("a self announce is not a plain record: %v", st)
	}
	mustOK(t, s.Unannounce(target, token, unannounceValue(kp, target), nodeID, t0))
	if _, ok := s.Forward(target, t0); ok || s.FindPeer(target, t0) != nil {
		t.Fatal("unannounce must drop the router entry")
	}
}

func TestStoreLookupLimit(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	topic := fill32(0x20)
	for i := range 30 {
		kp := kpN(byte(100 + i))
		mustOK(t, s.Announce(topic, token, announceValue(kp, topic, nil, 0, nil), nodeID, from, t0))
	}
	seen := map[key.PublicKey]bool{}
	for range 20 {
		r := lookup(t, s, topic, t0)
		if len(r.Peers) != MaxLookupRecords {
			t.Fatalf("lookup returned %d records", len(r.Peers))
		}
		dup := map[key.PublicKey]bool{}
		for _, p := range r.Peers {
			if dup[p.PublicKey] {
				t.Fatal("duplicate record in one reply")
			}
			dup[p.PublicKey] = true
			seen[p.PublicKey] = true
		}
	}
	if len(seen) != 30 {
		t.Errorf("random sampling reached only %d of 30 records in 20 lookups", len(seen))
	}
}

func TestStoreBump(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	topic := fill32(0x30)
	nowMs := uint64(t0.UnixMilli())
	steps := []struct {
		bump, want uint64
	}{
		{nowMs, nowMs},
		{nowMs - 5, nowMs},               // lower: kept
		{nowMs + 60_001, nowMs},          // too far in the future
		{nowMs + 60_000, nowMs + 60_000}, // at the drift limit
		{nowMs + 60_000, nowMs + 60_000}, // equal: no change
	}
	for i, st := range steps {
		mustOK(t, s.Announce(topic, token, announceValue(kpN(byte(40+i)), topic, nil, st.bump, nil), nodeID, from, t0))
		if got := lookup(t, s, topic, t0).Bump; got != st.want {
			t.Errorf("step %d: bump %d, want %d", i, got, st.want)
		}
	}
}

func TestStoreRecordExpiry(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	topic := fill32(0x40)
	// The sweep runs every ⌈⅔·20 min⌉ = 800 s: a record announced at t0
	// turns stale at 800 s and is gone at 1600 s.
	mustOK(t, s.Announce(topic, token, announceValue(kpN(1), topic, nil, 0, nil), nodeID, from, t0))
	if n := len(lookup(t, s, topic, t0.Add(1599*time.Second)).Peers); n != 1 {
		t.Fatalf("record gone early (%d)", n)
	}
	if n := len(lookup(t, s, topic, t0.Add(1600*time.Second)).Peers); n != 0 {
		t.Fatalf("record outlived two sweeps (%d)", n)
	}
	// Re-announcing a stale record makes it fresh again.
	s = NewStore(StoreConfig{}, t0)
	mustOK(t, s.Announce(topic, token, announceValue(kpN(1), topic, nil, 0, nil), nodeID, from, t0))
	mustOK(t, s.Announce(topic, token, announceValue(kpN(1), topic, nil, 0, nil), nodeID, from, t0.Add(1000*time.Second)))
	if n := len(lookup(t, s, topic, t0.Add(2399*time.Second)).Peers); n != 1 {
		t.Fatal("re-announced record expired early")
	}
	if n := len(lookup(t, s, topic, t0.Add(2400*time.Second)).Peers); n != 0 {
		t.Fatal("re-announced record outlived its sweeps")
	}
	// A long pause expires everything at once.
	mustOK(t, s.Announce(topic, token, announceValue(kpN(1), topic, nil, 0, nil), nodeID, from, t0.Add(3000*time.Second)))
	if st := s.Stats(t0.Add(1000 * time.Hour)); st != (StoreStats{}) {
		t.Fatalf("after a long pause: %v", st)
	}
}

// The reference keeps the first record of an announcer while it is fresh
// (record-cache ignores a second add), so changed relay addresses only
// take effect after a sweep.
func TestStoreFreshRecordKept(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	topic := fill32(0x41)
	kp := kpN(1)
	mustOK(t, s.Announce(topic, token, announceValue(kp, topic, []netip.AddrPort{ap("1.1.1.1:1")}, 0, nil), nodeID, from, t0))
	mustOK(t, s.Announce(topic, token, announceValue(kp, topic, []netip.AddrPort{ap("2.2.2.2:2")}, 0, nil), nodeID, from, t0))
	if r := lookup(t, s, topic, t0); r.Peers[0].RelayAddresses[0] != ap("1.1.1.1:1") {
		t.Fatalf("fresh record replaced: %+v", r)
	}
	later := t0.Add(800 * time.Second)
	mustOK(t, s.Announce(topic, token, announceValue(kp, topic, []netip.AddrPort{ap("2.2.2.2:2")}, 0, nil), nodeID, from, later))
	if r := lookup(t, s, topic, later); len(r.Peers) != 1 || r.Peers[0].RelayAddresses[0] != ap("2.2.2.2:2") {
		t.Fatalf("stale record not replaced: %+v", r)
	}
}

func TestStoreSizeLimits(t *testing.T) {
	s := NewStore(StoreConfig{MaxSize: 4}, t0)
	for i := range 50 {
		topic := fill32(byte(i))
		mustOK(t, s.Announce(topic, token, announceValue(kpN(1), topic, nil, 0, nil), nodeID, from, t0))
		v := []byte{byte(i)}
		mustOK(t, s.ImmutablePut(blakeSum(v), token, v, t0))
		st := s.Stats(t0)
		if st.Records > 2*4+1 || st.Bumps > 2*4 || st.Immutables > 2*2 {
			t.Fatalf("after %d puts: %v", i+1, st)
		}
	}
	// The newest entries survive the size sweeps.
	if v := s.ImmutableGet(blakeSum([]byte{49}), t0); !bytes.Equal(v, []byte{49}) {
		t.Fatal("newest immutable dropped")
	}
	if len(lookup(t, s, fill32(49), t0).Peers) != 1 {
		t.Fatal("newest record dropped")
	}
	if s.ImmutableGet(blakeSum([]byte{0}), t0) != nil {
		t.Fatal("oldest immutable kept beyond the bound")
	}
}

func mutablePut(kp key.KeyPair, seq uint64, value []byte) []byte {
	r := &MutablePutRequest{PublicKey: kp.Public, Seq: seq, Value: value, Signature: SignMutable(kp, seq, value)}
	return r.Append(nil)
}

func TestStoreMutable(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	kp := kpN(5)
	target := blakeSum(kp.Public[:])
	get := func(seq uint64) []byte {
		t.Helper()
		v, err := s.MutableGet(target, AppendMutableGetRequest(nil, seq), t0)
		mustOK(t, err)
		return v
	}
	if get(0) != nil {
		t.Fatal("empty store returned a value")
	}
	mustOK(t, s.MutablePut(target, token, mutablePut(kp, 5, []byte("five")), t0))
	r, err := DecodeMutableGetResponse(get(5))
	if err != nil || r.Seq != 5 || string(r.Value) != "five" || !VerifyMutable(kp.Public, r.Signature, r.Seq, r.Value) {
		t.Fatalf("get: %+v %v", r, err)
	}
	if get(6) != nil {
		t.Fatal("get above the stored seq must be null")
	}

	check := func(name string, value []byte, want error) {
		t.Helper()
		if err := s.MutablePut(target, token, value, t0); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	check("same seq, same value", mutablePut(kp, 5, []byte("five")), nil)
	check("same seq, other value", mutablePut(kp, 5, []byte("FIVE")), ErrorSeqReused)
	check("lower seq", mutablePut(kp, 4, []byte("four")), ErrorSeqTooLow)
	forged := mutablePut(kp, 9, []byte("nine"))
	forged[len(forged)-1] ^= 1
	check("forged", forged, ErrBadSignature)
	check("other key's record", mutablePut(kpN(6), 9, []byte("x")), ErrTargetMismatch)
	check("no token", nil, ErrMissingField)
	check("malformed", []byte{1, 2, 3}, ErrDecode)
	if c, ok := ReplyCode(s.MutablePut(target, token, mutablePut(kp, 4, []byte("four")), t0)); !ok || c != 17 {
		t.Errorf("SEQ_TOO_LOW must be error reply 17, got %v %v", c, ok)
	}
	if c, ok := ReplyCode(s.MutablePut(target, token, mutablePut(kp, 5, []byte("x")), t0)); !ok || c != 16 {
		t.Errorf("SEQ_REUSED must be error reply 16, got %v %v", c, ok)
	}
	check("higher seq", mutablePut(kp, 6, []byte{}), nil) // empty values are allowed, as in the reference
	if r, _ := DecodeMutableGetResponse(get(0)); r.Seq != 6 || len(r.Value) != 0 {
		t.Fatalf("after seq 6: %+v", r)
	}
	if _, err := s.MutableGet(target, nil, t0); !errors.Is(err, ErrMissingField) {
		t.Errorf("get without value: %v", err)
	}
	if _, err := s.MutableGet(target, []byte{}, t0); !errors.Is(err, ErrDecode) {
		t.Errorf("get with empty value: %v", err)
	}

	// 48 h values are swept every 32 h: gone after two sweeps unread.
	if v, _ := s.MutableGet(target, AppendMutableGetRequest(nil, 0), t0.Add(64*time.Hour)); v != nil {
		t.Error("mutable outlived two sweeps")
	}
}

func TestStoreImmutable(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	v := []byte("immutable value")
	target := blakeSum(v)
	if err := s.ImmutablePut(fill32(1), token, v, t0); !errors.Is(err, ErrTargetMismatch) {
		t.Fatalf("mismatched target: %v", err)
	}
	if err := s.ImmutablePut(target, nil, v, t0); !errors.Is(err, ErrMissingField) {
		t.Fatalf("no token: %v", err)
	}
	in := bytes.Clone(v)
	mustOK(t, s.ImmutablePut(target, token, in, t0))
	in[0] = 'X' // the store must own its copy
	if got := s.ImmutableGet(target, t0.Add(time.Hour)); !bytes.Equal(got, v) {
		t.Fatalf("got %q", got)
	}
	if s.ImmutableGet(fill32(2), t0) != nil {
		t.Fatal("unknown target returned a value")
	}
}

func TestStoreRefresh(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	topic := fill32(0x50)
	kp := kpN(7)
	secret := fill32(0x99)
	r1 := blakeSum(secret[:]) // the announce names H(secret); the refresh reveals secret
	mustOK(t, s.Announce(topic, token, announceValue(kp, topic, nil, 0, &r1), nodeID, from, t0))
	s.Remove(topic, kp.Public, t0)
	if len(lookup(t, s, topic, t0).Peers) != 0 {
		t.Fatal("remove failed")
	}
	refresh := (&Announce{Refresh: &secret}).Append(nil)
	mustOK(t, s.Announce(topic, token, refresh, nodeID, from, t0))
	if r := lookup(t, s, topic, t0); len(r.Peers) != 1 || r.Peers[0].PublicKey != kp.Public {
		t.Fatalf("refresh did not restore the record: %+v", r)
	}
	// The same preimage cannot be used twice: the entry is now keyed by it.
	if err := s.Announce(topic, token, refresh, nodeID, from, t0); !errors.Is(err, ErrUnknownRefresh) {
		t.Fatalf("replayed refresh: %v", err)
	}
}

func TestStoreRetainedForward(t *testing.T) {
	s := NewStore(StoreConfig{}, t0)
	kp := kpN(8)
	target := blakeSum(kp.Public[:])
	own := (&Peer{PublicKey: kp.Public, RelayAddresses: []netip.AddrPort{}}).Append(nil)
	s.RetainForward(target, Forward{Record: own}, t0)
	// An announce of the same key from elsewhere does not take it over.
	mustOK(t, s.Announce(target, token, announceValue(kp, target, nil, 0, nil), nodeID, from, t0))
	if fwd, ok := s.Forward(target, t0.Add(100*time.Hour)); !ok || fwd.Relay.IsValid() || !bytes.Equal(fwd.Record, own) {
		t.Fatalf("retained entry: %+v %v", fwd, ok)
	}
	s.DeleteForward(target, t0)
	if _, ok := s.Forward(target, t0); ok {
		t.Fatal("DeleteForward left the entry")
	}
}

// Reading old entries moves them back into the latest generation, and a
// peer that also keeps putting new ones must not grow the cache past two
// generations (xache's get moves them without a size check).
func TestGenCacheBoundWithReads(t *testing.T) {
	const maxSize = 4
	c := newGenCache[int, int](maxSize, time.Hour, t0)
	next := 0
	for range 50 {
		for range maxSize {
			c.set(next, next)
			next++
		}
		for k := range next {
			c.get(k)
		}
		if n := c.len(); n > 2*maxSize {
			t.Fatalf("%d entries after %d puts, each read back every round; want at most %d", n, next, 2*maxSize)
		}
	}
}
