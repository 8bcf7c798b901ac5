package noise

import (
	"testing"
)

// BenchmarkIKHandshake is one full hyperdht IK handshake, both sides:
// two key-pair derivations for the ephemerals and eight Ed25519 DHs, each
// with its point checks.
func BenchmarkIKHandshake(b *testing.B) {
	ck, sk := seeded(1), seeded(2)
	payload := make([]byte, 64) // about a noisePayload with two addresses
	for b.Loop() {
		c, _ := New(Config{Pattern: IK, Initiator: true, KeyPair: ck, RemoteKey: sk.Public, Prologue: NSPeerHandshake[:]})
		s, _ := New(Config{Pattern: IK, KeyPair: sk, Prologue: NSPeerHandshake[:]})
		m1, _ := c.WriteMessage(nil, payload)
		if _, err := s.ReadMessage(nil, m1); err != nil {
			b.Fatal(err)
		}
		m2, _ := s.WriteMessage(nil, payload)
		if _, err := c.ReadMessage(nil, m2); err != nil {
			b.Fatal(err)
		}
		r, _ := c.Result()
		_ = HolepunchSecret(r.Hash)
	}
}

// BenchmarkXXHandshake is secret-stream's own handshake, both sides.
func BenchmarkXXHandshake(b *testing.B) {
	for b.Loop() {
		ini, res := pair(b, XX)
		m1, _ := ini.WriteMessage(nil, nil)
		res.ReadMessage(nil, m1)
		m2, _ := res.WriteMessage(nil, nil)
		ini.ReadMessage(nil, m2)
		m3, _ := ini.WriteMessage(nil, nil)
		if _, err := res.ReadMessage(nil, m3); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDH is one DH, point checks included.
func BenchmarkDH(b *testing.B) {
	priv, pub := seeded(1).Private, seeded(2).Public
	for b.Loop() {
		if _, err := DH(priv, pub[:]); err != nil {
			b.Fatal(err)
		}
	}
}
