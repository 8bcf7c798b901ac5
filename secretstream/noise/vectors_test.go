package noise

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/keytunnel/keytunnel/internal/key"
)

// The payloads of the IK vector: noisePayload encodings as hyperdht sends
// them (a client's first message; a server's reply with one address).
const (
	ikPayload1 = "011800000100010001"
	ikPayload2 = "011a0001010102030449c20100020001"
)

// transcript runs a whole handshake between two Go sides with fixed keys —
// static seeds 01×32 (initiator) and 02×32 (responder), ephemeral seeds
// 03×32 and 04×32, as noise-vectors.js uses — and names every output the
// way the Node script does.
func transcript(t *testing.T, pat Pattern, prologue []byte, payloads [][]byte) map[string]string {
	t.Helper()
	ie, re := seeded(3), seeded(4)
	icfg := Config{Pattern: pat, Initiator: true, KeyPair: seeded(1), Prologue: prologue, Ephemeral: &ie}
	if pat == IK {
		icfg.RemoteKey = seeded(2).Public
	}
	ini, err := New(icfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := New(Config{Pattern: pat, KeyPair: seeded(2), Prologue: prologue, Ephemeral: &re})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	sides := []*Handshake{ini, res}
	for i, pl := range payloads {
		w, r := sides[i%2], sides[(i+1)%2]
		if w.Complete() || r.Complete() {
			t.Fatalf("complete before message %d", i+1)
		}
		msg, err := w.WriteMessage(nil, pl)
		if err != nil {
			t.Fatalf("write %d: %v", i+1, err)
		}
		got, err := r.ReadMessage(nil, msg)
		if err != nil {
			t.Fatalf("read %d: %v", i+1, err)
		}
		if !bytes.Equal(got, pl) {
			t.Fatalf("message %d: read payload %x, sent %x", i+1, got, pl)
		}
		out[fmt.Sprintf("msg%d", i+1)] = hex.EncodeToString(msg)
		out[fmt.Sprintf("read%d", i+1)] = hex.EncodeToString(got)
	}
	for i, side := range []string{"i", "r"} {
		r, err := sides[i].Result()
		if err != nil {
			t.Fatal(err)
		}
		if r.IsInitiator != (i == 0) || r.PublicKey != seeded(byte(1+i)).Public {
			t.Errorf("%s: result says initiator=%v, own key %s", side, r.IsInitiator, r.PublicKey)
		}
		out[side+"hash"] = hex.EncodeToString(r.Hash[:])
		out[side+"tx"] = hex.EncodeToString(r.Tx[:])
		out[side+"rx"] = hex.EncodeToString(r.Rx[:])
		out[side+"rpk"] = r.RemotePublicKey.String()
		if pat == IK {
			hp := HolepunchSecret(r.Hash)
			out[side+"hp"] = hex.EncodeToString(hp[:])
		}
	}
	return out
}

// TestIKVectorAgainstNode: the IK transcript with fixed keys equals the one
// hyperdht's lib/noise-wrap.js (noise-handshake + noise-curve-ed) produces,
// byte for byte, on both sides: messages, payloads, hash, split keys,
// holepunch secret, remote keys; and the namespace constants equal Node's.
func TestIKVectorAgainstNode(t *testing.T) {
	want := nodeOutput(t, "ik", ikPayload1, ikPayload2)
	if want["payload1"] != ikPayload1 || want["payload2"] != ikPayload2 {
		t.Fatalf("hyperdht re-encoded the payloads differently: %s %s", want["payload1"], want["payload2"])
	}
	got := transcript(t, IK, NSPeerHandshake[:], [][]byte{unhex(t, ikPayload1), unhex(t, ikPayload2)})
	got["payload1"], got["payload2"] = ikPayload1, ikPayload2
	got["ns_handshake"] = hex.EncodeToString(NSPeerHandshake[:])
	got["ns_holepunch"] = hex.EncodeToString(NSPeerHolepunch[:])
	compare(t, got, want)
}

// TestXXVectorAgainstNode: the XX transcript with fixed keys and an empty
// prologue equals noise-handshake's, once with empty payloads as
// secret-stream sends them and once with payloads in all three messages
// (the first in the clear).
func TestXXVectorAgainstNode(t *testing.T) {
	for _, payloads := range [][]string{{"", "", ""}, {"aa", "bbbb", "cccccc"}, {"00", "", "0102030405060708090a0b0c0d0e0f10111213"}} {
		t.Run(fmt.Sprint(payloads), func(t *testing.T) {
			want := nodeOutput(t, append([]string{"xx"}, payloads...)...)
			var pl [][]byte
			for _, p := range payloads {
				pl = append(pl, unhex(t, p))
			}
			compare(t, transcript(t, XX, nil, pl), want)
		})
	}
}

// TestSheetIKVector replays the deterministic IK transcript printed in
// shared/protocol/hyperdht.md §7, so the vector also holds where Node is
// not installed.
func TestSheetIKVector(t *testing.T) {
	got := transcript(t, IK, NSPeerHandshake[:], [][]byte{unhex(t, ikPayload1), unhex(t, ikPayload2)})
	want := map[string]string{
		"msg1":  "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1605c88a9067c5f85bd7499907d5c869548dd90bed5350bb2e7cb47efe61f60bc315838e49205f95b5a618d7c8c212eebf0ff5de91abd1276e3483e8a41cb35335bc02639241673adf8",
		"msg2":  "ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7cf6c2821870cb1d7e09e135064e7066c53b5ced3f521ab9e78d21ffc5a82f8f1a",
		"ihash": "784ae37b79e48c6b6dc8f6285b8c1c28d6c85c3a5b649bd2a20dd9db55725490d9a808de2f9cbabed302ff0aecfe48e4b9350ea1dbd6c9c498b52e9919aa826c",
		"rhash": "784ae37b79e48c6b6dc8f6285b8c1c28d6c85c3a5b649bd2a20dd9db55725490d9a808de2f9cbabed302ff0aecfe48e4b9350ea1dbd6c9c498b52e9919aa826c",
		"itx":   "cc00d99bd3a15a6779df38fd42fd25a84d73264023e7c1da95cf3bcbdce9c210",
		"irx":   "78dd48ecef5d11fd953197694a8ee2d9f8d86d49d56d856e3dd7c8e78047826b",
		"rtx":   "78dd48ecef5d11fd953197694a8ee2d9f8d86d49d56d856e3dd7c8e78047826b",
		"rrx":   "cc00d99bd3a15a6779df38fd42fd25a84d73264023e7c1da95cf3bcbdce9c210",
		"ihp":   "4337929c1f72603eccb38648539c1473c8b90196bf4340783f923b7c99ee6460",
		"rhp":   "4337929c1f72603eccb38648539c1473c8b90196bf4340783f923b7c99ee6460",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s\n got %s\nwant %s", k, got[k], w)
		}
	}
	if got["irpk"] != seeded(2).Public.String() || got["rrpk"] != seeded(1).Public.String() {
		t.Error("result remote keys wrong")
	}
	// hyperdht.md §1.2.
	for name, c := range map[string]struct {
		got  [32]byte
		want string
	}{
		"PEER_HANDSHAKE": {NSPeerHandshake, "14d6d4b49214ab1033ed204976caa258bae9e1e8543b9ad1fd996a910b0c4e3a"},
		"PEER_HOLEPUNCH": {NSPeerHolepunch, "f1191cd5e67b10b54a507033280ed1ff0e12278268d5679c8f93d417210d168b"},
		"ANNOUNCE":       {Namespace("hyperswarm/dht", 4), "36386adddf9f6fd60db83a6f42fc159d1146aa8644037664230aaa1f0179d497"},
		"PLUGIN":         {Namespace("hyperswarm/dht", 10), "6b8a2a8623f28c6c02a1e22abe515ce31cafd9af61d4b69970639aa7eb96a8d5"},
	} {
		if hex.EncodeToString(c.got[:]) != c.want {
			t.Errorf("NS %s = %x, want %s", name, c.got, c.want)
		}
	}
}

// TestResponderLearnsKey: an IK responder knows the initiator after
// message 1, before it writes its reply — hyperdht's server decides
// whether to answer from it.
func TestResponderLearnsKey(t *testing.T) {
	ini, _ := New(Config{Pattern: IK, Initiator: true, KeyPair: seeded(1), RemoteKey: seeded(2).Public})
	res, _ := New(Config{Pattern: IK, KeyPair: seeded(2)})
	if !res.RemotePublicKey().IsZero() {
		t.Fatal("remote key before any message")
	}
	m, _ := ini.WriteMessage(nil, nil)
	if _, err := res.ReadMessage(nil, m); err != nil {
		t.Fatal(err)
	}
	if res.RemotePublicKey() != seeded(1).Public {
		t.Fatal("responder did not learn the initiator key from message 1")
	}
	if res.Complete() {
		t.Fatal("complete after one message")
	}
	var zero key.PublicKey
	if r, err := res.Result(); err == nil || r.RemotePublicKey != zero {
		t.Fatal("Result before completion")
	}
}
