//go:build amd64 && !purego

package secretstream

import "golang.org/x/sys/cpu"

// salsa20x8 XORs 512 bytes of in with eight Salsa20 blocks into out: the
// blocks of state (words 8 and 9, the block counter, ignored) whose
// counters are ctr[j] (low word) and ctr[8+j] (high word).
//
//go:noescape
func salsa20x8(out, in *byte, state *[16]uint32, ctr *[16]uint32)

var hasSalsa20x8 = cpu.X86.HasAVX2

// salsa20x8AVX512 is salsa20x8 with AVX-512VL (xsalsa_amd64.s).
//
//go:noescape
func salsa20x8AVX512(out, in *byte, state *[16]uint32, ctr *[16]uint32)

// useAVX512 picks salsa20x8AVX512; tests turn it off to check both.
var useAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL
