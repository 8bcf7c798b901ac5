// Package key holds keytunnel's key types: Ed25519 key pairs derived from a
// 32-byte seed exactly as libsodium's crypto_sign_seed_keypair does (which is
// what hypercore-crypto's keyPair(seed) and hyperdht's DHT.keyPair(seed)
// call), and public keys with the two text forms the HyperDHT ecosystem
// prints: 64 hex characters, and 52 z-base-32 characters as
// hypercore-id-encoding writes them.
//
// It depends on the standard library only, so every other package can use it.
package key
