//go:build !amd64 || purego

package secretstream

const hasSalsa20x8 = false

func salsa20x8(out, in *byte, state *[16]uint32, ctr *[16]uint32) {
	panic("secretstream: salsa20x8 without AVX2")
}

var useAVX512 = false

func salsa20x8AVX512(out, in *byte, state *[16]uint32, ctr *[16]uint32) {
	panic("secretstream: salsa20x8AVX512 without AVX-512")
}
