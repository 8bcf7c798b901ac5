package wire

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// fuzzDecoder checks that the decoder for enc never panics, and that what
// it accepts re-encodes to a fixed point (decode∘encode is the identity on
// encoder output). Seeds are the interop vectors and random messages.
func fuzzDecoder(f *testing.F, enc string) {
	for _, v := range goVectors() {
		if v.enc == enc {
			f.Add(v.msg.Append(nil))
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for n := 0; n < 8; {
		e, m := randomMessage(rng)
		if e == enc {
			f.Add(m.Append(nil))
			n++
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		re, err := decodeAny(enc, b)
		if err != nil {
			return
		}
		re2, err := decodeAny(enc, re)
		if err != nil {
			t.Fatalf("re-encoding %x of %x does not decode: %v", re, b, err)
		}
		if !bytes.Equal(re, re2) {
			t.Fatalf("not a fixed point: %x -> %x -> %x", b, re, re2)
		}
	})
}

func FuzzDecodeHandshake(f *testing.F)          { fuzzDecoder(f, "handshake") }
func FuzzDecodeHolepunch(f *testing.F)          { fuzzDecoder(f, "holepunch") }
func FuzzDecodeNoisePayload(f *testing.F)       { fuzzDecoder(f, "noisePayload") }
func FuzzDecodeHolepunchPayload(f *testing.F)   { fuzzDecoder(f, "holepunchPayload") }
func FuzzDecodePeer(f *testing.F)               { fuzzDecoder(f, "peer") }
func FuzzDecodeLookupRawReply(f *testing.F)     { fuzzDecoder(f, "lookupRawReply") }
func FuzzDecodeAnnounce(f *testing.F)           { fuzzDecoder(f, "announce") }
func FuzzDecodeMutablePutRequest(f *testing.F)  { fuzzDecoder(f, "mutablePutRequest") }
func FuzzDecodeMutableGetResponse(f *testing.F) { fuzzDecoder(f, "mutableGetResponse") }
func FuzzDecodePluginRequest(f *testing.F)      { fuzzDecoder(f, "pluginRequest") }
func FuzzDecodeAddress(f *testing.F)            { fuzzDecoder(f, "address") }

// FuzzDecodeMutableGetRequest: the request is one uint; what decodes
// re-encodes canonically to bytes that decode to the same seq and are no
// longer than what was read.
func FuzzDecodeMutableGetRequest(f *testing.F) {
	for _, v := range randUints {
		f.Add(AppendMutableGetRequest(nil, v))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xfd, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, err := DecodeMutableGetRequest(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error %v does not wrap ErrDecode", err)
			}
			return
		}
		re := AppendMutableGetRequest(nil, seq)
		seq2, err := DecodeMutableGetRequest(re)
		if err != nil || seq2 != seq {
			t.Fatalf("%x: seq %d re-encodes to %x, which decodes to %d (%v)", b, seq, re, seq2, err)
		}
		if len(re) > len(b) {
			t.Fatalf("%x: re-encoding %x is longer", b, re)
		}
	})
}

func FuzzSecurePayloadDecrypt(f *testing.F) {
	sp := NewSecurePayload(fill32(1), fill32(2))
	var nonce [24]byte
	for _, p := range hppCases {
		f.Add(sp.Seal(nonce, p.Append(nil)))
	}
	f.Add(make([]byte, 41))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := sp.Decrypt(b); err == nil {
			// Only authentic payloads open; re-sealing must open again.
			if _, err := sp.Decrypt(sp.Seal(nonce, p.Append(nil))); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzStore feeds arbitrary request values to every store handler: no
// panics, and the size bounds hold.
func FuzzStore(f *testing.F) {
	kp := kpN(1)
	topic := fill32(0x10)
	f.Add(byte(0), announceValue(kp, topic, nil, 5, nil))
	f.Add(byte(1), unannounceValue(kp, topic))
	f.Add(byte(2), mutablePut(kp, 3, []byte("v")))
	f.Add(byte(3), []byte{0})
	f.Add(byte(4), []byte("x"))
	s := NewStore(StoreConfig{MaxSize: 8}, t0)
	now := t0
	f.Fuzz(func(t *testing.T, op byte, value []byte) {
		now = now.Add(time.Duration(op) * time.Second)
		target := topic
		if op&0x80 != 0 {
			target = blakeSum(value)
		}
		switch op % 8 {
		case 0:
			_ = s.Announce(target, token, value, nodeID, from, now)
		case 1:
			_ = s.Unannounce(target, token, value, nodeID, now)
		case 2:
			_ = s.MutablePut(blakeSum(kp.Public[:]), token, value, now)
		case 3:
			_, _ = s.MutableGet(target, value, now)
		case 4:
			_ = s.ImmutablePut(target, token, value, now)
		case 5:
			_ = s.ImmutableGet(target, now)
		case 6:
			if v := s.Lookup(target, now); v != nil {
				if _, err := DecodeLookupRawReply(v); err != nil {
					t.Fatalf("lookup reply does not decode: %v", err)
				}
			}
		case 7:
			_ = s.FindPeer(target, now)
		}
		if st := s.Stats(now); st.Records > 17 || st.Immutables > 8 || st.Mutables > 8 {
			t.Fatalf("bounds exceeded: %v", st)
		}
	})
}
