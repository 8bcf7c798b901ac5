// Package noise runs the Noise handshakes of the HyperDHT stack exactly as
// the Node modules noise-handshake 4.2.0 and noise-curve-ed 2.1.0 do, on top
// of github.com/flynn/noise:
//
//   - IK, as hyperdht carries it inside PEER_HANDSHAKE messages (prologue
//     NSPeerHandshake; the client knows the server's key). HolepunchSecret
//     derives hyperdht's key for holepunch payloads from its result.
//   - XX, which @hyperswarm/secret-stream runs on its own when it is given
//     a bare byte stream (empty prologue, empty payloads).
//
// Both use the protocol names Noise_IK_Ed25519_ChaChaPoly_BLAKE2b and
// Noise_XX_Ed25519_ChaChaPoly_BLAKE2b. The one departure from the Noise
// specification is the DH function: it is not X25519 but Ed25519 point
// multiplication (noise-curve-ed), so that a peer's identity key — the key
// it signs DHT records with — is also its Noise static key. See dh.go.
//
// # Why flynn/noise gives the same bytes as noise-handshake
//
// Checked against noise-handshake's source, and by the tests against the
// running Node modules:
//
//   - Protocol name: both build "Noise_" + pattern + "_" + DH + "_ChaChaPoly_BLAKE2b"
//     and, being under 64 bytes, zero-pad it into h; ck = h.
//   - Hash and HKDF: BLAKE2b-512, HMAC with a 128-byte block, standard Noise
//     HKDF (noise-handshake's HMAC(prk, prev ‖ info ‖ i) with empty info is
//     the same construction).
//   - Cipher: ChaCha20-Poly1305 IETF, AD = h, nonce 0x00000000 ‖ LE64(n).
//     noise-handshake writes only a 32-bit counter at offset 4, which is the
//     same bytes for every n below 2^32; a handshake uses n ≤ 1.
//   - Split: the first 32 bytes of each 64-byte HKDF output, k1 for the
//     initiator's sending direction.
//
// Where the two differ, this package follows noise-handshake:
//
//   - Size limits: noise-handshake refuses a ciphertext (not a message) over
//     65535 bytes; flynn/noise limits the payload instead. ReadMessage and
//     WriteMessage apply noise-handshake's rule themselves (see layouts).
//   - Failure: flynn/noise rolls its state back after a message fails to
//     decrypt, so the same handshake could read another; noise-handshake's
//     state is spent by a failed recv, and hyperdht drops that peer. A
//     Handshake that failed keeps returning its first error.
//   - The DH function refuses the points libsodium refuses (dh.go);
//     filippo.io/edwards25519 alone would accept some of them.
package noise
