package dhtrelay

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"reflect"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

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

var (
	samplePK    = key.PublicKey(fill32(0x11))
	sampleSK    = func() (s SecretKey) { copy(s[:32], bytes.Repeat([]byte{0x22}, 32)); copy(s[32:], samplePK[:]); return }()
	sampleRPK   = key.PublicKey(fill32(0x33))
	sampleHash  = Hash(fill64(0x44))
	sampleTopic = fill32(0x55)
	sampleToken = fill32(0x66)
)

func rep(n int, v byte) []byte { return bytes.Repeat([]byte{v}, n) }

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// samples are the values interop/dhtrelay-vectors.js encodes, by the same
// names.
var samples = map[string]Message{
	"handshake-noncustodial":        Handshake{PublicKey: samplePK},
	"handshake-custodial":           Handshake{Custodial: true, PublicKey: samplePK, SecretKey: sampleSK},
	"ping":                          Ping{},
	"pong":                          Pong{},
	"connect-noncustodial":          Connect{Alias: 1, PublicKey: samplePK, RemotePublicKey: sampleRPK},
	"connect-custodial":             Connect{Custodial: true, Alias: 0xfffffffe, PublicKey: samplePK, SecretKey: sampleSK, RemotePublicKey: sampleRPK},
	"connection-noncustodial":       Connection{Alias: 7, ServerAlias: 8, RemotePublicKey: sampleRPK, HandshakeID: 9},
	"connection-custodial":          Connection{Custodial: true, Alias: 7, ServerAlias: 8, RemotePublicKey: sampleRPK, HandshakeHash: sampleHash},
	"connected":                     Connected{Alias: 0x12345678, RemoteAlias: 0x9abcdef0},
	"incoming":                      Incoming{ID: 3, ServerAlias: 4, RemotePublicKey: sampleRPK, Payload: []byte("payload")},
	"incoming-empty":                Incoming{ID: 3, ServerAlias: 4, RemotePublicKey: sampleRPK, Payload: []byte{}},
	"deny":                          Deny{ID: 300},
	"accept":                        Accept{ID: 70000},
	"destroy-paired-error":          Destroy{Paired: true, Alias: 5, Error: "boom"},
	"destroy-unpaired":              Destroy{RemoteAlias: 6},
	"destroy-unpaired-error":        Destroy{RemoteAlias: 6, Error: "connection refused ✗"},
	"destroy-paired-empty-error":    Destroy{Paired: true, Alias: 5},
	"listen-noncustodial":           Listen{Alias: 2, PublicKey: samplePK},
	"listen-custodial":              Listen{Custodial: true, Alias: 2, PublicKey: samplePK, SecretKey: sampleSK},
	"listening":                     Listening{Alias: 2, RemoteAlias: 3, Address: ap("1.2.3.4:49737")},
	"close":                         Close{Alias: 2},
	"closed":                        Closed{Alias: 0},
	"open-noncustodial":             Open{Alias: 10, RemoteAlias: 11, HandshakeID: 12},
	"open-custodial":                Open{Custodial: true, Alias: 10, RemoteAlias: 11, HandshakeHash: sampleHash},
	"end":                           End{Alias: 4},
	"data":                          Data{Alias: 2, Chunks: [][]byte{[]byte("hi"), {}}},
	"data-empty":                    Data{Alias: 2},
	"data-big":                      Data{Alias: 2, Chunks: [][]byte{rep(300, 0xab), rep(70000, 0xcd)}},
	"result":                        Result{ID: 5, Data: []byte{1, 2}},
	"finished":                      Finished{ID: 5},
	"lookup":                        Lookup{ID: 5, Topic: sampleTopic},
	"announce-noncustodial":         Announce{ID: 6, Topic: sampleTopic, PublicKey: samplePK},
	"announce-custodial":            Announce{Custodial: true, ID: 6, Topic: sampleTopic, PublicKey: samplePK, SecretKey: sampleSK},
	"unannounce-noncustodial":       Unannounce{ID: 7, Topic: sampleTopic, PublicKey: samplePK},
	"unannounce-custodial":          Unannounce{Custodial: true, ID: 7, Topic: sampleTopic, PublicKey: samplePK, SecretKey: sampleSK},
	"signAnnounce":                  SignAnnounce{ID: 8, Signee: 6, Token: sampleToken, PeerID: rep(32, 0x77), RelayAddresses: []netip.AddrPort{ap("10.0.0.1:1"), ap("192.168.1.254:65535")}},
	"signAnnounce-nopeer":           SignAnnounce{ID: 8, Signee: 6, Token: sampleToken},
	"signUnannounce":                SignUnannounce{ID: 9, Signee: 2, Token: sampleToken, PeerID: rep(32, 0x77)},
	"signature":                     Signature{ID: 8, Signature: rep(64, 0x88)},
	"noiseSend-initiator":           NoiseSend{IsInitiator: true, ID: 13, RemoteStreamAlias: 1, Payload: []byte("np")},
	"noiseSend-responder":           NoiseSend{ID: 13, Payload: []byte("np")},
	"noiseReceive-initiator":        NoiseReceive{IsInitiator: true, ID: 14, Payload: rep(80, 0x99)},
	"noiseReceive-responder":        NoiseReceive{ID: 14, ServerAlias: 2, Payload: rep(80, 0x99)},
	"noiseReply-initiator-send":     NoiseReply{IsInitiator: true, ID: 15, Payload: rep(96, 0xaa)},
	"noiseReply-initiator-complete": NoiseReply{IsInitiator: true, Complete: true, ID: 15, Payload: []byte("np"), RemoteID: fill32(0xbb), HolepunchSecret: fill32(0xcc)},
	"noiseReply-responder-recv":     NoiseReply{ID: 16, Payload: []byte("np"), RemotePublicKey: sampleRPK},
	"noiseReply-responder-deny":     NoiseReply{ID: 16, Payload: []byte{}, RemotePublicKey: sampleRPK},
	"noiseReply-responder-complete": NoiseReply{Complete: true, ID: 16, Payload: rep(48, 0xdd), RemoteID: fill32(0xbb), HolepunchSecret: fill32(0xcc)},
}

var announcersSamples = map[string]Announcers{
	"announcers": {
		Token: sampleToken,
		From:  NodeAddr{ID: rep(32, 0x01), Address: ap("1.1.1.1:49737")},
		To:    NodeAddr{Address: ap("2.2.2.2:1")},
		Peers: []Peer{
			{PublicKey: samplePK},
			{PublicKey: sampleRPK, RelayAddresses: []netip.AddrPort{ap("3.3.3.3:3")}},
		},
	},
	"announcers-nopeers": {
		Token: sampleToken,
		From:  NodeAddr{Address: ap("0.0.0.0:0")},
		To:    NodeAddr{ID: rep(32, 0x02), Address: ap("255.255.255.255:65535")},
	},
}

var peerSample = Peer{PublicKey: samplePK, RelayAddresses: []netip.AddrPort{ap("4.4.4.4:4")}}

// normalize makes decoded and constructed values comparable with
// reflect.DeepEqual: empty slices become nil.
func normalize(m Message) Message {
	nz := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		return b
	}
	switch v := m.(type) {
	case Incoming:
		v.Payload = nz(v.Payload)
		return v
	case Data:
		if len(v.Chunks) == 0 {
			v.Chunks = nil
		}
		for i := range v.Chunks {
			v.Chunks[i] = nz(v.Chunks[i])
		}
		return v
	case Result:
		v.Data = nz(v.Data)
		return v
	case Signature:
		v.Signature = nz(v.Signature)
		return v
	case NoiseSend:
		v.Payload = nz(v.Payload)
		return v
	case NoiseReceive:
		v.Payload = nz(v.Payload)
		return v
	case NoiseReply:
		v.Payload = nz(v.Payload)
		return v
	case SignAnnounce:
		if len(v.RelayAddresses) == 0 {
			v.RelayAddresses = nil
		}
		return v
	case SignUnannounce:
		if len(v.RelayAddresses) == 0 {
			v.RelayAddresses = nil
		}
		return v
	}
	return m
}

// The protocol sheet's examples.
func TestSheetExamples(t *testing.T) {
	cases := []struct {
		m    Message
		want string
	}{
		{Destroy{Paired: true, Alias: 5, Error: "boom"}, "030500000004626f6f6d"},
		{Listening{Alias: 2, RemoteAlias: 3, Address: ap("1.2.3.4:49737")}, "020000000300000001020304" + "49c2"},
		{Data{Alias: 2, Chunks: [][]byte{[]byte("hi"), nil}}, "0200000002026869" + "00"},
		{Handshake{PublicKey: samplePK}, "00" + hex.EncodeToString(samplePK[:])},
	}
	for _, c := range cases {
		if got := hex.EncodeToString(c.m.AppendBody(nil)); got != c.want {
			t.Errorf("%s: %s, want %s", c.m.Type(), got, c.want)
		}
	}
	if got := hex.EncodeToString(AppendFrame(nil, 1, Ping{})); got != "0101" {
		t.Errorf("ping frame %s", got)
	}
	if got := hex.EncodeToString(AppendOpenFrame(nil, 1)); got != "00010115406879706572737761726d2f6468742d72656c617900" {
		t.Errorf("open frame %s", got)
	}
}

func TestSamplesRoundTrip(t *testing.T) {
	seen := map[Type]bool{}
	for name, m := range samples {
		seen[m.Type()] = true
		body := m.AppendBody(nil)
		got, err := DecodeMessage(m.Type(), body)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Errorf("%s: decoded %+v, want %+v", name, got, m)
		}
	}
	if len(seen) != NumTypes {
		t.Errorf("samples cover %d of %d types", len(seen), NumTypes)
	}
}

type vectorLine struct {
	Kind  string          `json:"kind"`
	Name  string          `json:"name"`
	Type  json.RawMessage `json:"type"`
	Codec string          `json:"codec"`
	Body  string          `json:"body"`
	Frame string          `json:"frame"`
	Hex   string          `json:"hex"`
	In    string          `json:"in"`
	OK    bool            `json:"ok"`
	Re    string          `json:"re"`
}

// decodeReencode decodes in as the message type or codec named by typ and
// re-encodes it; ok is false when the decoder refuses the input.
func decodeReencode(t *testing.T, typ json.RawMessage, in []byte) (re []byte, ok bool) {
	t.Helper()
	var codec string
	if json.Unmarshal(typ, &codec) == nil {
		switch codec {
		case "announcers":
			a, err := DecodeAnnouncers(in)
			return a.Append(nil), err == nil
		case "peer":
			p, err := DecodePeer(in)
			return AppendPeer(nil, p), err == nil
		}
		t.Fatalf("unknown codec %q", codec)
	}
	n, err := strconv.Atoi(string(typ))
	if err != nil {
		t.Fatalf("bad type %s", typ)
	}
	m, err := DecodeMessage(Type(n), in)
	if err != nil {
		return nil, false
	}
	return m.AppendBody(nil), true
}

// invalidUTF8Error reports a destroy body whose error string is not valid
// UTF-8.
func invalidUTF8Error(typ json.RawMessage, in []byte) bool {
	if string(typ) != strconv.Itoa(int(TypeDestroy)) {
		return false
	}
	m, err := DecodeMessage(TypeDestroy, in)
	return err == nil && !utf8.ValidString(m.(Destroy).Error)
}

// TestNodeVectors checks every sample against the bytes the reference
// encodes, and every edge-case body against the reference's decoder.
func TestNodeVectors(t *testing.T) {
	p := nodetest.Start(t, "dhtrelay-vectors.js")
	counts := map[string]int{}
	names := map[string]bool{}
	for {
		line := p.Expect("{", 60*time.Second)
		var v vectorLine
		if err := json.Unmarshal([]byte("{"+line), &v); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		if v.Kind == "done" {
			break
		}
		counts[v.Kind]++
		switch v.Kind {
		case "open":
			if got := hex.EncodeToString(AppendOpenFrame(nil, 1)); got != v.Frame {
				t.Errorf("open frame: Go %s, Node %s", got, v.Frame)
			}
		case "encode":
			names[v.Name] = true
			m, ok := samples[v.Name]
			if !ok {
				t.Errorf("%s: no Go sample", v.Name)
				continue
			}
			if want, _ := strconv.Atoi(string(v.Type)); int(m.Type()) != want {
				t.Errorf("%s: Go type %d, Node %d", v.Name, m.Type(), want)
			}
			if got := hex.EncodeToString(m.AppendBody(nil)); got != v.Body {
				t.Errorf("%s body:\n  Go %s\nNode %s", v.Name, got, v.Body)
			}
			if got := hex.EncodeToString(AppendFrame(nil, 1, m)); got != v.Frame {
				t.Errorf("%s frame:\n  Go %s\nNode %s", v.Name, got, v.Frame)
			}
			body, _ := hex.DecodeString(v.Body)
			d, err := DecodeMessage(m.Type(), body)
			if err != nil {
				t.Errorf("%s: decoding Node's bytes: %v", v.Name, err)
			} else if !reflect.DeepEqual(normalize(d), normalize(m)) {
				t.Errorf("%s: decoded %+v, want %+v", v.Name, d, m)
			}
		case "codec":
			names[v.Name] = true
			var got []byte
			switch v.Codec {
			case "announcers":
				a, ok := announcersSamples[v.Name]
				if !ok {
					t.Errorf("%s: no Go sample", v.Name)
					continue
				}
				got = a.Append(nil)
				b, _ := hex.DecodeString(v.Hex)
				d, err := DecodeAnnouncers(b)
				if err != nil || !bytes.Equal(d.Append(nil), b) {
					t.Errorf("%s: decode: %v", v.Name, err)
				}
			case "peer":
				got = AppendPeer(nil, peerSample)
			}
			if hex.EncodeToString(got) != v.Hex {
				t.Errorf("%s:\n  Go %x\nNode %s", v.Name, got, v.Hex)
			}
		case "decode":
			in, _ := hex.DecodeString(v.In)
			re, ok := decodeReencode(t, v.Type, in)
			if ok != v.OK {
				t.Errorf("type %s input %s: Go ok=%v, Node ok=%v", v.Type, v.In, ok, v.OK)
			} else if ok && hex.EncodeToString(re) != v.Re {
				if invalidUTF8Error(v.Type, in) {
					// Node decodes the string with U+FFFD replacement;
					// Go keeps the bytes (see Destroy.Error).
					counts["utf8-kept"]++
					continue
				}
				t.Errorf("type %s input %s: Go re-encodes %x, Node %s", v.Type, v.In, re, v.Re)
			}
		}
	}
	for name := range samples {
		if !names[name] {
			t.Errorf("sample %s not in the Node script", name)
		}
	}
	for name := range announcersSamples {
		if !names[name] {
			t.Errorf("sample %s not in the Node script", name)
		}
	}
	if counts["encode"] != len(samples) || counts["decode"] < 1000 {
		t.Errorf("too few vectors: %v", counts)
	}
	t.Logf("vectors checked: %v", counts)
}
