package secretstream

import (
	"crypto/subtle"
	"encoding/binary"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/poly1305"
	"golang.org/x/crypto/salsa20/salsa"
)

// Datagram envelopes are crypto_secretbox_easy (XSalsa20-Poly1305), as
// sodium-universal seals them for @hyperswarm/secret-stream's send. On
// amd64 with AVX2 the key stream comes eight blocks at a time (salsa20x8,
// in assembly; salsa20x8AVX512 where the CPU has AVX-512VL, whose
// registers hold the whole state): x/crypto's Salsa20 (SSE2, four
// blocks at a time) took ~1.9 µs of the ~2.2 µs that sealing a
// 1200-byte datagram cost, most of it in fixed costs per call, which was
// half the CPU time of each keytunnel process carrying UDP. Elsewhere,
// x/crypto's secretbox does it all. The output is byte for byte
// secretbox's (xsalsa_test.go checks it against golang.org/x/crypto's
// nacl/secretbox at every length around the 512-byte steps).
//
// secretbox: subkey = HSalsa20(key, nonce[0:16]); the Salsa20 stream
// of (subkey, nonce[16:24]) from block 0: its first 32 bytes are the
// Poly1305 key, the rest is XORed with the message; the tag is Poly1305
// of the ciphertext; the box is tag ‖ ciphertext.

// xsalsaSeal appends the secretbox of msg to dst.
func xsalsaSeal(dst, msg []byte, nonce *[24]byte, key *[32]byte) []byte {
	if !hasSalsa20x8 {
		return secretbox.Seal(dst, msg, nonce, key)
	}
	var st xsalsaStream
	polyKey := st.init(nonce, key)
	ret, out := sliceForAppend(dst, poly1305.TagSize+len(msg))
	ct := out[poly1305.TagSize:]
	st.xor(ct, msg)
	var tag [poly1305.TagSize]byte
	poly1305.Sum(&tag, ct, &polyKey)
	copy(out, tag[:])
	return ret
}

// xsalsaOpen appends the message in box to dst, or reports false if box
// does not authenticate (and then writes nothing). dst's spare capacity
// must not overlap box.
func xsalsaOpen(dst, box []byte, nonce *[24]byte, key *[32]byte) ([]byte, bool) {
	if !hasSalsa20x8 || len(box) < poly1305.TagSize {
		return secretbox.Open(dst, box, nonce, key)
	}
	var st xsalsaStream
	polyKey := st.init(nonce, key)
	ct := box[poly1305.TagSize:]
	if !poly1305.Verify((*[poly1305.TagSize]byte)(box), ct, &polyKey) {
		return nil, false
	}
	ret, out := sliceForAppend(dst, len(ct))
	st.xor(out, ct)
	return ret, true
}

// xsalsaStream is the Salsa20 stream of a secretbox.
type xsalsaStream struct {
	state [16]uint32 // Salsa20's input, words 8 and 9 (the block counter) aside
	ctr   [16]uint32 // the counters of the next eight blocks: low words, high words
	block uint64     // the next block
	buf   [512]byte  // blocks 0-7 (init), then the last partial eight blocks
}

var sigma = [4]uint32{0x61707865, 0x3320646e, 0x79622d32, 0x6b206574} // "expand 32-byte k"

// init sets the stream up and computes its blocks 0-7, whose first 32
// bytes it returns: the Poly1305 key.
func (s *xsalsaStream) init(nonce *[24]byte, key *[32]byte) [32]byte {
	var hNonce [16]byte
	copy(hNonce[:], nonce[:16])
	var sub [32]byte
	salsa.HSalsa20(&sub, &hNonce, key, &salsa.Sigma)
	k := func(i int) uint32 { return binary.LittleEndian.Uint32(sub[4*i:]) }
	s.state = [16]uint32{
		sigma[0], k(0), k(1), k(2),
		k(3), sigma[1], binary.LittleEndian.Uint32(nonce[16:]), binary.LittleEndian.Uint32(nonce[20:]),
		0, 0, sigma[2], k(4),
		k(5), k(6), k(7), sigma[3],
	}
	s.eight(s.buf[:], s.buf[:]) // buf is zero: the key stream itself
	return [32]byte(s.buf[:32])
}

// eight XORs the next eight blocks into out from in (512 bytes each,
// which may be the same).
func (s *xsalsaStream) eight(out, in []byte) {
	for j := range 8 {
		c := s.block + uint64(j)
		s.ctr[j], s.ctr[8+j] = uint32(c), uint32(c>>32)
	}
	if useAVX512 {
		salsa20x8AVX512(&out[0], &in[0], &s.state, &s.ctr)
	} else {
		salsa20x8(&out[0], &in[0], &s.state, &s.ctr)
	}
	s.block += 8
}

// xor XORs in with the stream from byte 32 into out.
func (s *xsalsaStream) xor(out, in []byte) {
	n := min(len(in), 512-32)
	subtle.XORBytes(out[:n], in[:n], s.buf[32:32+n])
	out, in = out[n:], in[n:]
	for len(in) >= 512 {
		s.eight(out, in)
		out, in = out[512:], in[512:]
	}
	if len(in) > 0 {
		copy(s.buf[:], in)
		s.eight(s.buf[:], s.buf[:])
		copy(out, s.buf[:len(in)])
	}
	clear(s.buf[:])
}
