package wire

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

type storeOp struct {
	cmd          string
	target       [32]byte
	token, value []byte // nil = null
	from         netip.AddrPort
}

func argHex(b []byte) string {
	switch {
	case b == nil:
		return "-"
	case len(b) == 0:
		return "="
	}
	return hex.EncodeToString(b)
}

func (o storeOp) line() string {
	return fmt.Sprintf("%s %x %s %s %s", o.cmd, o.target, argHex(o.token), argHex(o.value), o.from)
}

// run applies o to s and formats the outcome as hyperdht-store.js does.
func (o storeOp) run(s *Store, id [32]byte, now time.Time) string {
	reply := func(v []byte, err error) string {
		if c, ok := ReplyCode(err); ok {
			return fmt.Sprintf("error %d", c)
		}
		if err != nil {
			return "silent"
		}
		if v == nil {
			return "reply null"
		}
		return "reply " + hex.EncodeToString(v)
	}
	switch o.cmd {
	case "lookup":
		return reply(s.Lookup(o.target, now), nil)
	case "findpeer":
		return reply(s.FindPeer(o.target, now), nil)
	case "announce":
		return reply(nil, s.Announce(o.target, o.token, o.value, id, o.from, now))
	case "unannounce":
		return reply(nil, s.Unannounce(o.target, o.token, o.value, id, now))
	case "mutableput":
		return reply(nil, s.MutablePut(o.target, o.token, o.value, now))
	case "mutableget":
		return reply(s.MutableGet(o.target, o.value, now))
	case "immutableput":
		return reply(nil, s.ImmutablePut(o.target, o.token, o.value, now))
	case "immutableget":
		return reply(s.ImmutableGet(o.target, now), nil)
	}
	panic(o.cmd)
}

// sameLookup compares LOOKUP replies as sets, since both sides sample
// records in random order.
func sameLookup(a, b string) bool {
	if a == b {
		return true
	}
	pa, oka := strings.CutPrefix(a, "reply ")
	pb, okb := strings.CutPrefix(b, "reply ")
	if !oka || !okb || pa == "null" || pb == "null" {
		return false
	}
	ra, err1 := DecodeLookupRawReply(mustHex(pa))
	rb, err2 := DecodeLookupRawReply(mustHex(pb))
	if err1 != nil || err2 != nil || ra.Bump != rb.Bump || len(ra.Peers) != len(rb.Peers) {
		return false
	}
	enc := func(r LookupRawReply) []string {
		var out []string
		for _, p := range r.Peers {
			out = append(out, hex.EncodeToString(p.Append(nil)))
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(enc(ra), enc(rb))
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

// TestStoreMatchesNode replays the same random request sequence against
// hyperdht's own lib/persistent.js and against Store, and requires the
// same answer (reply value, error code or silence) to every request.
func TestStoreMatchesNode(t *testing.T) {
	id := fill32(0x1d)
	p := nodetest.Start(t, "hyperdht-store.js", hex.EncodeToString(id[:]))
	p.Expect("ready", 30*time.Second)
	now := time.Now()
	s := NewStore(StoreConfig{}, now)
	rng := rand.New(rand.NewPCG(7, 8))

	kps := []key.KeyPair{kpN(1), kpN(2), kpN(3), kpN(4)}
	topics := [][32]byte{fill32(0xa0), fill32(0xa1), blakeSum(kps[0].Public[:]), blakeSum(kps[1].Public[:])}
	secrets := [][32]byte{fill32(0xe0), fill32(0xe1), fill32(0xe2)}
	immVals := [][]byte{[]byte("one"), []byte("two"), {}}
	froms := []netip.AddrPort{ap("1.2.3.4:1000"), ap("5.6.7.8:2000")}
	tok := bytes.Repeat([]byte{0x7a}, 32)
	nowMs := uint64(now.UnixMilli())
	counts := map[string]int{}

	for i := range 1500 {
		o := storeOp{from: froms[rng.IntN(2)], token: tok}
		kp := kps[rng.IntN(len(kps))]
		o.target = topics[rng.IntN(len(topics))]
		switch rng.IntN(10) {
		case 0, 1:
			o.cmd = "announce"
			var relays []netip.AddrPort
			for range rng.IntN(6) {
				relays = append(relays, rAddr4(rng))
			}
			a := &Announce{Peer: &Peer{PublicKey: kp.Public, RelayAddresses: append([]netip.AddrPort{}, relays...)},
				Bump: []uint64{0, 0, nowMs - 1000, nowMs + 30_000, nowMs + 120_000, nowMs + uint64(i)}[rng.IntN(6)]}
			if rng.IntN(3) == 0 {
				a.Refresh = ptr(blakeSum(secrets[rng.IntN(len(secrets))][:]))
			}
			signID := id
			if rng.IntN(8) == 0 {
				signID = fill32(0x2d)
			}
			sig := SignAnnounce(kp, o.target, signID, tok, a)
			if rng.IntN(8) == 0 {
				sig[5] ^= 1
			}
			if rng.IntN(10) > 0 {
				a.Signature = &sig
			}
			o.value = a.Append(nil)
		case 2:
			o.cmd = "announce" // a refresh
			o.value = (&Announce{Refresh: ptr(secrets[rng.IntN(len(secrets))])}).Append(nil)
		case 3:
			o.cmd = "unannounce"
			a := &Announce{Peer: &Peer{PublicKey: kp.Public, RelayAddresses: []netip.AddrPort{}}}
			sig := SignUnannounce(kp, o.target, id, tok, a)
			if rng.IntN(5) == 0 {
				sig = SignAnnounce(kp, o.target, id, tok, a)
			}
			a.Signature = &sig
			o.value = a.Append(nil)
		case 4, 5:
			o.cmd = "mutableput"
			o.target = blakeSum(kp.Public[:])
			if rng.IntN(8) == 0 {
				o.target = topics[0]
			}
			seq := uint64(rng.IntN(4))
			val := [][]byte{[]byte("a"), []byte("b"), {}}[rng.IntN(3)]
			r := &MutablePutRequest{PublicKey: kp.Public, Seq: seq, Value: val, Signature: SignMutable(kp, seq, val)}
			if rng.IntN(8) == 0 {
				r.Signature[0] ^= 1
			}
			o.value = r.Append(nil)
		case 6:
			o.cmd = "mutableget"
			o.target = blakeSum(kp.Public[:])
			o.value = [][]byte{nil, {}, {0}, {1}, {2}, {3}, {4}}[rng.IntN(7)]
		case 7:
			o.cmd = "immutableput"
			o.value = immVals[rng.IntN(len(immVals))]
			o.target = blakeSum(o.value)
			if rng.IntN(5) == 0 {
				o.target = topics[0]
			}
		case 8:
			o.cmd = []string{"lookup", "findpeer", "immutableget"}[rng.IntN(3)]
			if o.cmd == "immutableget" {
				o.target = blakeSum(immVals[rng.IntN(len(immVals))])
			}
			o.token = nil
		case 9:
			o.cmd = []string{"announce", "unannounce", "mutableput", "immutableput"}[rng.IntN(4)]
			o.value = mutate(rng, rBytes(rng, 50))
			if rng.IntN(3) == 0 {
				o.token = nil
			}
		}
		goRes := strings.TrimSpace(o.run(s, id, time.Now()))
		if _, err := fmt.Fprintln(p.Stdin(), o.line()); err != nil {
			t.Fatal(err)
		}
		nodeRes := p.Expect("res ", 30*time.Second)
		if !sameLookup(goRes, nodeRes) {
			t.Fatalf("op %d %s:\n Go   %s\n Node %s", i, o.line(), goRes, nodeRes)
		}
		counts[o.cmd+" "+strings.Fields(goRes)[0]]++
	}
	t.Logf("outcomes: %v", counts)
	for _, k := range []string{"announce reply", "announce silent", "mutableput error", "mutableput reply", "mutableput silent", "lookup reply", "findpeer reply"} {
		if counts[k] == 0 {
			t.Errorf("no %q outcome: the sequence does not exercise it", k)
		}
	}
}
