package dht

import "golang.org/x/crypto/blake2b"

// Hash is BLAKE2b-256, hyperdht's hash for targets: H(publicKey) for
// FIND_PEER, self-announces and mutables, H(value) for immutables.
func Hash(b []byte) [32]byte { return blake2b.Sum256(b) }
