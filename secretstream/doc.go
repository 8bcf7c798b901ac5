// Package secretstream implements @hyperswarm/secret-stream (6.9.2), the
// encrypted stream of the HyperDHT / Hyperswarm stack, byte-compatible with
// Node.
//
// A Conn (a net.Conn) wraps any reliable byte stream (RawConn): TCP,
// net.Pipe, a UDX stream. Everything on the wire is a frame
//
//	len u24 little-endian ‖ body[len]          (len ≤ 2^24 − 1)
//
// in three phases:
//
//  1. Handshake (only without Options.Handshake): Noise XX over Ed25519
//     (package secretstream/noise) with an empty prologue and empty
//     payloads, one message per frame: 32, 96 and 64 bytes. hyperdht mode
//     passes the result of its IK handshake instead and skips this phase.
//  2. Header: each side sends one 56-byte body,
//     StreamID(hash, ownRole)[32] ‖ secretstream header[24], where the
//     header is crypto_secretstream_xchacha20poly1305_init_push(tx)'s. The
//     receiver checks the length and the id (the one for the peer's role)
//     and runs init_pull(rx, header).
//  3. Data: each body is crypto_secretstream_xchacha20poly1305_push(
//     plaintext, TAG_MESSAGE) — 1 encrypted tag byte ‖ ciphertext ‖ 16-byte
//     MAC, i.e. plaintext + 17 bytes. An empty plaintext is a keepalive.
//     The end of stream is the raw stream's end (CloseWrite); no FINAL tag
//     is ever sent.
//
// Unordered datagrams (secret-stream's send/trySend over UDX MESSAGE
// packets) are boxed with XSalsa20-Poly1305 under per-role keys derived from
// the handshake hash; see Datagrams, SealDatagram and OpenDatagram. The
// box is crypto_secretbox's, from golang.org/x/crypto (a wider,
// hand-written Salsa20 would seal 1200 bytes in 1.0 µs instead of 2.2, but
// cryptographic assembly is what a well-kept library is for).
// ReadDatagramBatch takes a burst at a time without allocating.
//
// crypto_secretstream_xchacha20poly1305 itself is implemented here from
// golang.org/x/crypto primitives (xchacha.go), with no per-message
// allocation.
//
// Differences from Node, all invisible on the wire to a Node peer:
//
//   - Writes are split into frames of at most Options.WriteFrameSize (64 KiB
//     by default) instead of one frame per write; Node refuses writes above
//     2^24 − 18 bytes, Go splits them. Node delivers each frame as a chunk,
//     so the peer sees the same bytes.
//   - Received empty frames are always dropped: io.Reader has no way to
//     deliver an empty message (Node delivers one only with keepalive and
//     filterZeroByteMessages off).
//   - This side's header is sent in front of its first frame rather than
//     right after the handshake, so that two sides over an unbuffered pipe
//     cannot deadlock writing headers; the peer needs it only to decrypt
//     that frame.
//   - A receive bound below the protocol maximum can be set
//     (Options.MaxFrameSize). The read buffer grows with received bytes,
//     never with an announced length (see frameReader).
package secretstream
