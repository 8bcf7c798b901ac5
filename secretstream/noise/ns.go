package noise

import "golang.org/x/crypto/blake2b"

// Namespace derives hypercore-crypto's namespace(name, ids): for each id,
// BLAKE2b-256( BLAKE2b-256(name) ‖ byte(id) ). hyperdht names its protocol
// constants this way from "hyperswarm/dht" and the command numbers.
func Namespace(name string, id byte) [32]byte {
	base := blake2b.Sum256([]byte(name))
	return blake2b.Sum256(append(base[:], id))
}

var (
	// NSPeerHandshake (namespace "hyperswarm/dht", command 0
	// PEER_HANDSHAKE) is the prologue of hyperdht's IK handshake.
	NSPeerHandshake = Namespace("hyperswarm/dht", 0)
	// NSPeerHolepunch (command 1 PEER_HOLEPUNCH) keys the holepunch secret.
	NSPeerHolepunch = Namespace("hyperswarm/dht", 1)
)

// HolepunchSecret is hyperdht's key for encrypting holepunch payloads:
// BLAKE2b-256 of NS_PEER_HOLEPUNCH keyed with the 64-byte handshake hash
// (sodium crypto_generichash(out, NS_PEER_HOLEPUNCH, hash)).
func HolepunchSecret(hash [64]byte) [32]byte {
	h, _ := blake2b.New256(hash[:]) // keys up to 64 bytes are valid
	h.Write(NSPeerHolepunch[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}
