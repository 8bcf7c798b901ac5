package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Values from the protocol sheet (hyperdht.md), checked without Node.

func TestSheetNamespaces(t *testing.T) {
	if h := blakeSum([]byte("hyperswarm/dht")); !bytes.HasPrefix(h[:], unhex(t, "d70d90f7")) || !bytes.HasSuffix(h[:], unhex(t, "7dcb90")) {
		t.Errorf("H(hyperswarm/dht) = %x", h)
	}
	for _, c := range []struct {
		ns  [32]byte
		hex string
	}{
		{NSAnnounce, "36386adddf9f6fd60db83a6f42fc159d1146aa8644037664230aaa1f0179d497"},
		{NSUnannounce, "ded293cd93fb395e756ecf5fff426529e72c36eacc22e5ed944d9099a2561e32"},
		{NSMutablePut, "668e823edd5ce7f5338d68bf1161f4a3c28ce437ee2ab49efd30d99366039b1e"},
		{NSPeerHandshake, "14d6d4b49214ab1033ed204976caa258bae9e1e8543b9ad1fd996a910b0c4e3a"},
		{NSPeerHolepunch, "f1191cd5e67b10b54a507033280ed1ff0e12278268d5679c8f93d417210d168b"},
		{NSPlugin, "6b8a2a8623f28c6c02a1e22abe515ce31cafd9af61d4b69970639aa7eb96a8d5"},
	} {
		if !bytes.Equal(c.ns[:], unhex(t, c.hex)) {
			t.Errorf("namespace %x, sheet %s", c.ns, c.hex)
		}
	}
}

func TestSheetExamples(t *testing.T) {
	cc := bytes.Repeat([]byte{0xcc}, 32)
	dd := bytes.Repeat([]byte{0xdd}, 32)
	gv := goVectors()
	for _, c := range []struct {
		name string
		msg  message
		hex  string
	}{
		{"handshake", gv["hs-relay"].msg, "01 02 02 01 02 01 02 03 04 49 c2"},
		{"holepunch", gv["hp-sheet"].msg, "01 00 03 02 aa bb 01 02 03 04 49 c2"},
		{"noise client", gv["np-client"].msg, "01 1a 00 00 01 c0a80102 a00f 01 00 fe04030201 00 01"},
		{"noise server", gv["np-server"].msg, "01 79 00 03 00 01 01010101 49c2 02020202 b315 01 01 07 00 01 01 00" +
			bytesHex(cc) + bytesHex(dd) + "01 01010101 49c2"},
		{"peer", gv["peer-sheet"].msg, bytesHex(bytes.Repeat([]byte{0x42}, 32)) + "01 01010101 49c2"},
		{"lookupRawReply", gv["lrr-sheet"].msg, "01" + bytesHex(bytes.Repeat([]byte{0x42}, 32)) + "00 00"},
		{"mutableSignable", gv["msig"].msg, "01 05 68656c6c6f"},
		{"pluginRequest", gv["plug-sheet"].msg, "01 78 01 02 01 01 00"},
		{"noise payload1", &NoisePayload{UDX: &UDXInfo{ID: 1}, SecretStream: &SecretStreamInfo{}}, "011800000100010001"},
		{"noise payload2", &NoisePayload{Firewall: FirewallOpen, Addresses4: []netip.AddrPort{ap("1.2.3.4:49737")},
			UDX: &UDXInfo{ID: 2}, SecretStream: &SecretStreamInfo{}}, "011a0001010102030449c20100020001"},
	} {
		if got := c.msg.Append(nil); !bytes.Equal(got, unhex(t, c.hex)) {
			t.Errorf("%s: %x, sheet %s", c.name, got, c.hex)
		}
	}
}

func bytesHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestSheetSignatures(t *testing.T) {
	kp := key.FromSeed(fill32(7))
	if !bytes.Equal(kp.Public[:], unhex(t, "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c")) {
		t.Fatalf("pk %x", kp.Public)
	}
	target := blakeSum(kp.Public[:])
	if !bytes.Equal(target[:], unhex(t, "8d2d1c260127c74476b27136c5e38c003b66b889f5c80032fb81ebc3f44f45a3")) {
		t.Fatalf("target %x", target)
	}
	ann := &Announce{Peer: &Peer{PublicKey: kp.Public}}
	tok := bytes.Repeat([]byte{1}, 32)
	msg := AnnounceSignable(NSAnnounce, target, fill32(2), tok, ann.Peer, nil)
	if !bytes.Equal(msg[32:], unhex(t, "882618e66f2d06203670de4012d52ac31e1d164d38b0b96fe376f656c167a5ff")) {
		t.Errorf("announce inner hash %x", msg[32:])
	}
	sig := SignAnnounce(kp, target, fill32(2), tok, ann)
	if !bytes.Equal(sig[:], unhex(t, "e05d0018a790e515cf2e8346d6226e2c55efb1366817b45741ba8d28856d7e2b620b17e177095d7c8f66cd70a7fa18ce6794120cf185224d64899a576526b504")) {
		t.Errorf("announce signature %x", sig)
	}
	ann.Signature = &sig
	if !VerifyAnnounce(NSAnnounce, target, fill32(2), tok, ann) {
		t.Error("sheet announce signature does not verify")
	}
	if VerifyAnnounce(NSAnnounce, target, fill32(3), tok, ann) {
		t.Error("announce signature verifies for another node id")
	}
	mmsg := MutableSignable(1, []byte("hello"))
	if !bytes.Equal(mmsg[32:], unhex(t, "aa1b682ba34869f178c04f6b3864203a9da6e538b590c482c21bd8938c297b54")) {
		t.Errorf("mutable inner hash %x", mmsg[32:])
	}
	msig := SignMutable(kp, 1, []byte("hello"))
	if !bytes.Equal(msig[:], unhex(t, "af2c54d1fdf45ccf79291f03e5a0b55f4c0108d868ae41db8c184ae2600e8bd731717c9a270e666c75850ee212126ac368dffb65a4707e249a874be9aff58506")) {
		t.Errorf("mutable signature %x", msig)
	}
	if !VerifyMutable(kp.Public, msig, 1, []byte("hello")) || VerifyMutable(kp.Public, msig, 2, []byte("hello")) {
		t.Error("mutable verification wrong")
	}
}

func TestSheetHolepunchSecret(t *testing.T) {
	hash := unhex(t, "784ae37b79e48c6b6dc8f6285b8c1c28d6c85c3a5b649bd2a20dd9db55725490d9a808de2f9cbabed302ff0aecfe48e4b9350ea1dbd6c9c498b52e9919aa826c")
	got := HolepunchSecret(hash)
	if !bytes.Equal(got[:], unhex(t, "4337929c1f72603eccb38648539c1473c8b90196bf4340783f923b7c99ee6460")) {
		t.Errorf("holepunchSecret %x", got)
	}
}

func TestNoisePayloadVersionMismatch(t *testing.T) {
	p, err := DecodeNoisePayload([]byte{2, 0xff, 0xff}) // the rest is not read
	if err != nil || p.Version != 2 || p.UDX != nil || p.RelayAddresses != nil {
		t.Fatalf("got %+v, %v", p, err)
	}
}

func TestSecurePayloadRejects(t *testing.T) {
	sp := NewSecurePayload(fill32(1), fill32(2))
	if _, err := sp.Decrypt(make([]byte, Overhead)); !errors.Is(err, ErrDecrypt) {
		t.Errorf("40-byte payload: %v", err)
	}
	var nonce [24]byte
	if _, err := sp.Decrypt(sp.Seal(nonce, nil)); !errors.Is(err, ErrDecrypt) {
		t.Errorf("empty plaintext must be refused like the reference: %v", err)
	}
	if _, err := sp.Decrypt(sp.Seal(nonce, []byte{0xff})); !errors.Is(err, ErrDecode) {
		t.Errorf("undecodable plaintext: %v", err)
	}
	other := NewSecurePayload(fill32(9), fill32(2))
	if _, err := other.Decrypt(sp.Seal(nonce, []byte{0, 0, 0, 0})); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong key: %v", err)
	}
	if a, b := sp.Token("1.2.3.4"), NewSecurePayload(fill32(1), fill32(3)).Token("1.2.3.4"); a == b {
		t.Error("tokens must depend on the local secret")
	}
}

func TestErrors(t *testing.T) {
	if ErrorSeqTooLow.Error() != "hyperdht: SEQ_TOO_LOW" || ErrorCode(99).String() != "ERROR(99)" {
		t.Error(ErrorSeqTooLow.Error(), ErrorCode(99).String())
	}
	if c, ok := ReplyCode(error(ErrorSeqReused)); !ok || c != 16 {
		t.Error("ReplyCode")
	}
	if _, ok := ReplyCode(ErrBadSignature); ok {
		t.Error("ReplyCode on a drop error")
	}
	e := ErrPeerNotFound.WithMessage("no such key")
	if !errors.Is(e, ErrPeerNotFound) || errors.Is(e, ErrPeerConnectionFailed) || e.Error() != "PEER_NOT_FOUND: no such key" {
		t.Error("DHTError matching")
	}
	if CmdMutableGet.String() != "MUTABLE_GET" || !CmdPlugin.Storage() || CmdPeerHolepunch.Storage() {
		t.Error("Command")
	}
}
