package key

// z-base-32 (Zooko's human-oriented base 32) as the z32 npm package writes
// it: 5 bits a character, most significant bit first, the last character
// padded with zero bits, no '=' padding. 32 bytes are 256 bits, so 52
// characters whose final 4 bits are padding.
const z32Alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"

const z32Len = (Size*8 + 4) / 5

var z32Reverse = func() (r [256]int8) {
	for i := range r {
		r[i] = -1
	}
	for i := 0; i < len(z32Alphabet); i++ {
		r[z32Alphabet[i]] = int8(i)
	}
	return r
}()

func encodeZ32(b []byte) string {
	out := make([]byte, 0, (len(b)*8+4)/5)
	var acc uint32
	bits := 0
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out = append(out, z32Alphabet[(acc>>bits)&31])
		}
	}
	if bits > 0 {
		out = append(out, z32Alphabet[(acc<<(5-bits))&31])
	}
	return string(out)
}

// decodeZ32 fills dst from s and reports whether every character was in the
// alphabet and s has exactly the characters dst needs. Padding bits are
// ignored, as the z32 package ignores them.
func decodeZ32(dst []byte, s string) bool {
	if len(s) != (len(dst)*8+4)/5 {
		return false
	}
	var acc uint32
	bits, n := 0, 0
	for i := 0; i < len(s); i++ {
		v := z32Reverse[s[i]]
		if v < 0 {
			return false
		}
		acc = acc<<5 | uint32(v)
		bits += 5
		if bits >= 8 {
			bits -= 8
			if n < len(dst) {
				dst[n] = byte(acc >> bits)
				n++
			}
		}
	}
	return n == len(dst)
}
