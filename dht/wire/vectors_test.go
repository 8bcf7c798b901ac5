package wire

import (
	"bytes"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

var ap = netip.MustParseAddrPort

func fill32(v byte) (b [32]byte) {
	for i := range b {
		b[i] = v
	}
	return b
}

func fill64(v byte) (b [64]byte) {
	for i := range b {
		b[i] = v
	}
	return b
}

func ptr[T any](v T) *T { return &v }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// message is any type of this package with an encoder.
type message interface{ Append([]byte) []byte }

var (
	peerA    = Peer{PublicKey: fill32(0x42), RelayAddresses: []netip.AddrPort{ap("1.1.1.1:49737")}}
	peerB    = Peer{PublicKey: fill32(0x01), RelayAddresses: []netip.AddrPort{}}
	peerFive = Peer{PublicKey: fill32(0x55), RelayAddresses: []netip.AddrPort{
		ap("1.0.0.1:1"), ap("1.0.0.2:2"), ap("1.0.0.3:3"), ap("1.0.0.4:4"), ap("1.0.0.5:5"),
	}}
	hppCases = map[string]*HolepunchPayload{
		"hpp-min":         {},
		"hpp-probe":       {Firewall: 2, Round: 1, Addresses: []netip.AddrPort{ap("1.2.3.4:5000")}, RemoteAddress: ap("5.6.7.8:9000")},
		"hpp-empty-addrs": {Firewall: 1, Round: 2, Connected: true, Addresses: []netip.AddrPort{}},
		"hpp-all": {Error: 3, Firewall: 3, Round: 252, Connected: true, Punching: true,
			Addresses:     []netip.AddrPort{ap("9.9.9.9:1"), ap("8.8.8.8:65535")},
			RemoteAddress: ap("7.7.7.7:7"), Token: ptr(fill32(0xa1)), RemoteToken: ptr(fill32(0xb2))},
	}
)

type goVector struct {
	enc string // the encoding's name in hyperdht-vectors.js
	msg message
}

// goVectors are the same values as hyperdht-vectors.js's, built in Go.
func goVectors() map[string]goVector {
	v := map[string]goVector{
		"hs-relay":       {"handshake", &Handshake{Mode: ModeFromRelay, Noise: []byte{1, 2}, PeerAddress: ap("1.2.3.4:49737")}},
		"hs-client":      {"handshake", &Handshake{Mode: ModeFromClient, Noise: bytes.Repeat([]byte{0x11}, 32)}},
		"hs-both":        {"handshake", &Handshake{Mode: ModeFromSecondRelay, Noise: []byte{0xaa, 0xbb, 0xcc}, PeerAddress: ap("10.0.0.1:1"), RelayAddress: ap("255.255.255.255:65535")}},
		"hs-empty-noise": {"handshake", &Handshake{Mode: ModeReply, Noise: []byte{}, RelayAddress: ap("0.0.0.0:0")}},
		"hp-sheet":       {"holepunch", &Holepunch{Mode: ModeFromClient, ID: 3, Payload: []byte{0xaa, 0xbb}, PeerAddress: ap("1.2.3.4:49737")}},
		"hp-big":         {"holepunch", &Holepunch{Mode: ModeReply, ID: 70000, Payload: bytes.Repeat([]byte{0x5a}, 300)}},
		"np-client": {"noisePayload", &NoisePayload{Addresses4: []netip.AddrPort{ap("192.168.1.2:4000")},
			UDX: &UDXInfo{ID: 0x01020304}, SecretStream: &SecretStreamInfo{}}},
		"np-server": {"noisePayload", &NoisePayload{Firewall: FirewallRandom,
			Holepunch:      &HolepunchInfo{ID: 0, Relays: []RelayInfo{{ap("1.1.1.1:49737"), ap("2.2.2.2:5555")}}},
			UDX:            &UDXInfo{ReusableSocket: true, ID: 7},
			SecretStream:   &SecretStreamInfo{},
			RelayThrough:   &RelayThroughInfo{PublicKey: fill32(0xcc), Token: fill32(0xdd)},
			RelayAddresses: []netip.AddrPort{ap("1.1.1.1:49737")}}},
		"np-min":          {"noisePayload", &NoisePayload{Firewall: FirewallOpen, Addresses4: []netip.AddrPort{}}},
		"np-empty-relays": {"noisePayload", &NoisePayload{RelayAddresses: []netip.AddrPort{}}},
		"np-v6":           {"noisePayload", &NoisePayload{Error: ErrorTryLater, Addresses6: []netip.AddrPort{ap("[2001:db8::1]:5000"), ap("[::1]:1")}}},
		"np-all": {"noisePayload", &NoisePayload{Error: 2, Firewall: 3,
			Holepunch:      &HolepunchInfo{ID: 300, Relays: []RelayInfo{{ap("3.3.3.3:3"), ap("4.4.4.4:4")}, {ap("5.5.5.5:5"), ap("6.6.6.6:6")}}},
			Addresses4:     []netip.AddrPort{ap("10.1.1.1:1000"), ap("10.2.2.2:2000")},
			Addresses6:     []netip.AddrPort{ap("[fe80::1]:3000")},
			UDX:            &UDXInfo{ReusableSocket: true, ID: 0xffffffff, Seq: 5},
			SecretStream:   &SecretStreamInfo{},
			RelayThrough:   &RelayThroughInfo{PublicKey: fill32(1), Token: fill32(2)},
			RelayAddresses: []netip.AddrPort{ap("1.1.1.1:1"), ap("2.2.2.2:2"), ap("3.3.3.3:3")}}},
		"peer-sheet":       {"peer", &peerA},
		"peer-none":        {"peer", &peerB},
		"peer-five":        {"peer", &peerFive},
		"lrr-sheet":        {"lookupRawReply", &LookupRawReply{Peers: []Peer{{PublicKey: fill32(0x42)}}}},
		"lrr-two-bump":     {"lookupRawReply", &LookupRawReply{Peers: []Peer{peerA, peerFive}, Bump: 1700000000000}},
		"lrr-empty":        {"lookupRawReply", &LookupRawReply{Bump: 7}},
		"ann-full":         {"announce", &Announce{Peer: &peerA, Refresh: ptr(fill32(0x33)), Signature: ptr(fill64(0x44)), Bump: 12345}},
		"ann-peer-sig":     {"announce", &Announce{Peer: &peerB, Signature: ptr(fill64(0x45))}},
		"ann-refresh-only": {"announce", &Announce{Refresh: ptr(fill32(0x34))}},
		"ann-empty":        {"announce", &Announce{}},
		"msig":             {"mutableSignable", rawMessage(AppendMutableSignable(nil, 1, []byte("hello")))},
		"mput":             {"mutablePutRequest", &MutablePutRequest{PublicKey: fill32(7), Seq: 300, Value: []byte("hello"), Signature: fill64(9)}},
		"mget":             {"mutableGetResponse", &MutableGetResponse{Seq: 1 << 32, Value: []byte{}, Signature: fill64(0x0a)}},
		"plug-sheet":       {"pluginRequest", &PluginRequest{Plugin: "x", Version: 1, Command: 2, Value: []byte{0}}},
		"plug-novalue":     {"pluginRequest", &PluginRequest{Plugin: "dht-stats", Version: 3}},
		"plug-emptyvalue":  {"pluginRequest", &PluginRequest{Plugin: "é", Version: 300, Command: 70000, Value: []byte{}}},
		"addr-key":         {"address", &Address{Key: fill32(0x61)}},
		"addr-nodes":       {"address", &Address{Key: fill32(0x62), Nodes: []netip.AddrPort{ap("1.2.3.4:1"), ap("5.6.7.8:2")}}},
	}
	for name, p := range hppCases {
		v[name] = goVector{"holepunchPayload", p}
	}
	return v
}

type rawMessage []byte

func (r rawMessage) Append(b []byte) []byte { return append(b, r...) }

// decodeAny decodes b with the named encoding and re-encodes it, so every
// decoder can be checked against the encoder and against Node's decoder.
func decodeAny(enc string, b []byte) ([]byte, error) {
	var m message
	var err error
	switch enc {
	case "handshake":
		var v Handshake
		v, err = DecodeHandshake(b)
		m = &v
	case "holepunch":
		var v Holepunch
		v, err = DecodeHolepunch(b)
		m = &v
	case "noisePayload":
		var v NoisePayload
		v, err = DecodeNoisePayload(b)
		m = &v
	case "holepunchPayload":
		var v HolepunchPayload
		v, err = DecodeHolepunchPayload(b)
		m = &v
	case "peer":
		var v Peer
		v, err = DecodePeer(b)
		m = &v
	case "lookupRawReply":
		var v LookupRawReply
		v, err = DecodeLookupRawReply(b)
		m = &v
	case "announce":
		var v Announce
		v, err = DecodeAnnounce(b)
		m = &v
	case "mutablePutRequest":
		var v MutablePutRequest
		v, err = DecodeMutablePutRequest(b)
		m = &v
	case "mutableGetResponse":
		var v MutableGetResponse
		v, err = DecodeMutableGetResponse(b)
		m = &v
	case "mutableSignable":
		var v MutableGetResponse // same prefix: seq, value
		v, err = DecodeMutableGetResponse(append(bytes.Clone(b), make([]byte, 64)...))
		return AppendMutableSignable(nil, v.Seq, v.Value), err
	case "pluginRequest":
		var v PluginRequest
		v, err = DecodePluginRequest(b)
		m = &v
	case "address":
		var v Address
		v, err = DecodeAddress(b)
		m = &v
	default:
		return nil, fmt.Errorf("unknown encoding %q", enc)
	}
	if err != nil {
		return nil, err
	}
	return m.Append(nil), nil
}

// nodeVectors runs hyperdht-vectors.js and collects what it prints before
// "ready", keyed by "kind name".
func nodeVectors(t *testing.T) (*nodetest.Proc, map[string][]byte) {
	p := nodetest.Start(t, "hyperdht-vectors.js")
	out := map[string][]byte{}
	for {
		line := p.Expect("", 30*time.Second)
		if line == "ready" {
			return p, out
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("bad line from node: %q", line)
		}
		out[f[0]+" "+f[1]] = unhex(t, f[2])
	}
}

// nodeCmd sends one command and returns the answer line (without the
// command's echo prefix).
func nodeCmd(t *testing.T, p *nodetest.Proc, cmd string) string {
	t.Helper()
	verb, _, _ := strings.Cut(cmd, " ")
	if _, err := fmt.Fprintln(p.Stdin(), cmd); err != nil {
		t.Fatalf("writing to node: %v", err)
	}
	return p.Expect(verb+" ", 30*time.Second)
}

func TestNodeInterop(t *testing.T) {
	p, nv := nodeVectors(t)

	t.Run("NodeToGo", func(t *testing.T) {
		gv := goVectors()
		n := 0
		for k, want := range nv {
			name, ok := strings.CutPrefix(k, "vec ")
			if !ok {
				continue
			}
			n++
			v, ok := gv[name]
			if !ok {
				t.Errorf("%s: no Go vector", name)
				continue
			}
			if got := v.msg.Append(nil); !bytes.Equal(got, want) {
				t.Errorf("%s: Go %x\n Node %x", name, got, want)
			}
			re, err := decodeAny(v.enc, want)
			if err != nil || !bytes.Equal(re, want) {
				t.Errorf("%s: Go decode of Node bytes re-encodes to %x (%v)", name, re, err)
			}
		}
		if n != len(gv) {
			t.Errorf("node printed %d vectors, Go has %d", n, len(gv))
		}
	})

	t.Run("GoToNode", func(t *testing.T) {
		for name, v := range goVectors() {
			b := v.msg.Append(nil)
			ans := nodeCmd(t, p, fmt.Sprintf("dec %s %x", v.enc, b))
			if f := strings.Fields(ans); len(f) < 2 || f[0] != "ok" || f[1] != hex.EncodeToString(b) {
				t.Errorf("%s: node answers %q for %x", name, ans, b)
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 300 {
			enc, m := randomMessage(rng)
			b := m.Append(nil)
			ans := nodeCmd(t, p, fmt.Sprintf("dec %s %x", enc, b))
			if f := strings.Fields(ans); len(f) < 2 || f[0] != "ok" || f[1] != hex.EncodeToString(b) {
				t.Fatalf("random %d (%s): node answers %q for %x", i, enc, ans, b)
			}
		}
	})

	t.Run("Differential", func(t *testing.T) {
		// Random and mutated inputs: Go and Node must agree on accepting
		// them, and on what they contain (compared through re-encoding).
		rng := rand.New(rand.NewPCG(3, 4))
		encs := []string{"handshake", "holepunch", "noisePayload", "holepunchPayload", "peer",
			"lookupRawReply", "announce", "mutablePutRequest", "mutableGetResponse", "address"}
		var accepted, rejected int
		defer func() {
			t.Logf("%d inputs accepted by both, %d rejected by both", accepted, rejected)
			if accepted < 200 || rejected < 200 {
				t.Errorf("differential inputs are lopsided: %d accepted, %d rejected", accepted, rejected)
			}
		}()
		for i := range 1500 {
			var enc string
			var b []byte
			if i%2 == 0 {
				enc = encs[rng.IntN(len(encs))]
				b = make([]byte, rng.IntN(40))
				for j := range b {
					b[j] = byte(rng.IntN(8)) // small values: plausible flags and counts
				}
			} else {
				var m message
				enc, m = randomMessage(rng)
				if enc == "pluginRequest" {
					continue
				}
				b = mutate(rng, m.Append(nil))
			}
			re, err := decodeAny(enc, b)
			ans := nodeCmd(t, p, fmt.Sprintf("dec %s %x", enc, b))
			f := strings.Fields(ans)
			nodeOK := len(f) >= 2 && f[0] == "ok"
			if nodeOK != (err == nil) {
				t.Fatalf("%s %x: Go err %v, node %q", enc, b, err, ans)
			}
			if nodeOK && f[1] != hex.EncodeToString(re) {
				t.Fatalf("%s %x: Go re-encodes %x, node %s", enc, b, re, f[1])
			}
			if nodeOK {
				accepted++
			} else {
				rejected++
			}
		}
	})

	t.Run("Namespaces", func(t *testing.T) {
		for name, ns := range map[string][32]byte{
			"ANNOUNCE": NSAnnounce, "UNANNOUNCE": NSUnannounce, "MUTABLE_PUT": NSMutablePut,
			"PEER_HANDSHAKE": NSPeerHandshake, "PEER_HOLEPUNCH": NSPeerHolepunch, "PLUGIN": NSPlugin,
		} {
			if want := nv["ns "+name]; !bytes.Equal(ns[:], want) {
				t.Errorf("NS %s: Go %x, Node %x", name, ns, want)
			}
		}
	})

	t.Run("Signatures", func(t *testing.T) {
		kp := key.FromSeed(fill32(7))
		target := blakeSum(kp.Public[:])
		ann := &Announce{Peer: &Peer{PublicKey: kp.Public}}
		ann2 := &Announce{Peer: &Peer{PublicKey: kp.Public, RelayAddresses: peerFive.RelayAddresses}, Refresh: ptr(fill32(0x33))}
		tok16 := bytes.Repeat([]byte{5}, 16)
		tok := bytes.Repeat([]byte{1}, 32)
		got := map[string][64]byte{
			"ann-sheet":            SignAnnounce(kp, target, fill32(2), tok, ann),
			"unann-sheet":          SignUnannounce(kp, target, fill32(2), tok, ann),
			"ann-relays-refresh":   SignAnnounce(kp, fill32(0x77), fill32(6), tok16, ann2),
			"unann-relays-refresh": SignUnannounce(kp, fill32(0x77), fill32(6), tok16, ann2),
			"mut-sheet":            SignMutable(kp, 1, []byte("hello")),
			"mut-big":              SignMutable(kp, 1<<40, bytes.Repeat([]byte{0xee}, 1000)),
			"mut-empty":            SignMutable(kp, 0, nil),
		}
		for name, sig := range got {
			if want := nv["sig "+name]; !bytes.Equal(sig[:], want) {
				t.Errorf("signature %s: Go %x, Node %x", name, sig, want)
			}
		}
		a2 := *ann2
		a2.Signature = ptr(got["ann-relays-refresh"])
		if !VerifyAnnounce(NSAnnounce, fill32(0x77), fill32(6), tok16, &a2) {
			t.Error("Node's announce signature does not verify in Go")
		}
		if VerifyAnnounce(NSUnannounce, fill32(0x77), fill32(6), tok16, &a2) {
			t.Error("announce signature verifies as unannounce")
		}
	})

	t.Run("VerifyRules", func(t *testing.T) {
		kp := key.FromSeed(fill32(9))
		msg := []byte("message")
		good := SignMutable(kp, 1, msg)
		gm := MutableSignable(1, msg)
		identity := make([]byte, 32)
		identity[0] = 1
		order2 := unhex(t, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
		nonCanonID := unhex(t, "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
		zeroS := make([]byte, 32)
		// S + L: the same signature with a non-canonical scalar.
		bigS := addL(good[32:])
		cases := []struct {
			name    string
			pk, sig []byte
			msg     []byte
		}{
			{"valid", kp.Public[:], good[:], gm[:]},
			{"wrong message", kp.Public[:], good[:], msg},
			{"identity key, identity R, S=0", identity, append(bytes.Clone(identity), zeroS...), msg},
			{"order-2 key", order2, append(bytes.Clone(identity), zeroS...), msg},
			{"non-canonical identity key", nonCanonID, append(bytes.Clone(identity), zeroS...), msg},
			{"small-order R", kp.Public[:], append(bytes.Clone(identity), good[32:]...), gm[:]},
			{"S+L", kp.Public[:], append(bytes.Clone(good[:32]), bigS...), gm[:]},
		}
		for _, c := range cases {
			var pk key.PublicKey
			copy(pk[:], c.pk)
			goOK := Verify(pk, c.msg, c.sig)
			if c.name == "identity key, identity R, S=0" && !ed25519.Verify(c.pk, c.msg, c.sig) {
				t.Errorf("crypto/ed25519 no longer accepts the small-order case; the test lost its point")
			}
			ans := nodeCmd(t, p, fmt.Sprintf("verify %x %x %x", c.pk, c.msg, c.sig))
			if ans != fmt.Sprint(goOK) {
				t.Errorf("%s: Go %v, node %s", c.name, goOK, ans)
			}
		}
	})

	t.Run("SecurePayload", func(t *testing.T) {
		sp := NewSecurePayload(fill32(0x51), fill32(0x52))
		for name, want := range hppCases {
			sealed := nv["sp "+name]
			got, err := sp.Decrypt(sealed)
			if err != nil {
				t.Errorf("%s: decrypting Node's payload: %v", name, err)
				continue
			}
			if !bytes.Equal(got.Append(nil), want.Append(nil)) {
				t.Errorf("%s: decrypted %+v", name, got)
			}
			mine, err := sp.Encrypt(want, crand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			ans := nodeCmd(t, p, fmt.Sprintf("open %x %x", fill32(0x51), mine))
			if ans != "ok "+hex.EncodeToString(want.Append(nil)) {
				t.Errorf("%s: node opens Go's payload as %q", name, ans)
			}
			mine[len(mine)-1] ^= 1
			if ans := nodeCmd(t, p, fmt.Sprintf("open %x %x", fill32(0x51), mine)); ans != "null" {
				t.Errorf("%s: node opens a corrupted payload: %q", name, ans)
			}
		}
		for _, host := range []string{"1.2.3.4", "255.255.255.255", "::1"} {
			if got, want := sp.Token(host), nv["tok "+host]; !bytes.Equal(got[:], want) {
				t.Errorf("token(%s): Go %x, Node %x", host, got, want)
			}
		}
	})
}
