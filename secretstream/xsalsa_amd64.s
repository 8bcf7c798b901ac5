//go:build amd64 && !purego

#include "textflag.h"

// Salsa20 for eight blocks at once with AVX2 (see xsalsa.go): register
// lane j of word i is word i of block j. The working state lives in the
// frame (word i at i*32(SP)); two quarter-rounds at a time are loaded
// into Y0-Y7 and computed with Y8-Y11 as temporaries.

// QR2 runs the quarter-rounds (a,b,c,d) and (e,f,g,h) on state words
// given as byte offsets into the frame: b ^= (a+d)<<<7, c ^= (b+a)<<<9,
// d ^= (c+b)<<<13, a ^= (d+c)<<<18, interleaved for parallelism.
#define ROT(k, rk, x, y, t, u) \
	VPSLLD $k, t, u; \
	VPSRLD $rk, t, t; \
	VPXOR u, x, x; \
	VPXOR t, x, x

#define QR2(a, b, c, d, e, f, g, h) \
	VMOVDQU a(SP), Y0; VMOVDQU b(SP), Y1; VMOVDQU c(SP), Y2; VMOVDQU d(SP), Y3; \
	VMOVDQU e(SP), Y4; VMOVDQU f(SP), Y5; VMOVDQU g(SP), Y6; VMOVDQU h(SP), Y7; \
	VPADDD Y0, Y3, Y8; VPADDD Y4, Y7, Y10; \
	ROT(7, 25, Y1, Y1, Y8, Y9); ROT(7, 25, Y5, Y5, Y10, Y11); \
	VPADDD Y1, Y0, Y8; VPADDD Y5, Y4, Y10; \
	ROT(9, 23, Y2, Y2, Y8, Y9); ROT(9, 23, Y6, Y6, Y10, Y11); \
	VPADDD Y2, Y1, Y8; VPADDD Y6, Y5, Y10; \
	ROT(13, 19, Y3, Y3, Y8, Y9); ROT(13, 19, Y7, Y7, Y10, Y11); \
	VPADDD Y3, Y2, Y8; VPADDD Y7, Y6, Y10; \
	ROT(18, 14, Y0, Y0, Y8, Y9); ROT(18, 14, Y4, Y4, Y10, Y11); \
	VMOVDQU Y0, a(SP); VMOVDQU Y1, b(SP); VMOVDQU Y2, c(SP); VMOVDQU Y3, d(SP); \
	VMOVDQU Y4, e(SP); VMOVDQU Y5, f(SP); VMOVDQU Y6, g(SP); VMOVDQU Y7, h(SP)

// LOADW sets register r to input word i of all eight blocks: the
// state's word broadcast, or for words 8 and 9 (the block counter) the
// per-block values in ctr (DX).
#define LOADW(i, r) VPBROADCASTD (i*4)(SI), r

// OUT4 adds the input to words 4g..4g+3 (frame offsets o0..o3),
// transposes them and XORs them, 16 bytes per block, into out at byte
// 16g of each block.
#define OUT4(g, o0, o1, o2, o3, r0, r1, r2, r3) \
	VMOVDQU o0(SP), Y0; VMOVDQU o1(SP), Y1; VMOVDQU o2(SP), Y2; VMOVDQU o3(SP), Y3; \
	VPADDD r0, Y0, Y0; VPADDD r1, Y1, Y1; VPADDD r2, Y2, Y2; VPADDD r3, Y3, Y3; \
	VPUNPCKLDQ Y1, Y0, Y4; VPUNPCKHDQ Y1, Y0, Y5; \
	VPUNPCKLDQ Y3, Y2, Y6; VPUNPCKHDQ Y3, Y2, Y7; \
	VPUNPCKLQDQ Y6, Y4, Y8; VPUNPCKHQDQ Y6, Y4, Y9; \
	VPUNPCKLQDQ Y7, Y5, Y10; VPUNPCKHQDQ Y7, Y5, Y11; \
	XOR16(g, 0, Y8, X8); XOR16(g, 1, Y9, X9); XOR16(g, 2, Y10, X10); XOR16(g, 3, Y11, X11)

// XOR16 writes block k's and block k+4's 16 bytes at 16g: the low and
// the high half of y (x is its low half).
#define XOR16(g, k, y, x) \
	VEXTRACTI128 $1, y, X12; \
	VPXOR ((k+4)*64+g*16)(CX), X12, X12; \
	VMOVDQU X12, ((k+4)*64+g*16)(DI); \
	VPXOR (k*64+g*16)(CX), x, x; \
	VMOVDQU x, (k*64+g*16)(DI)

// OUTPUT adds the input (state in SI, counters in DX) to the working
// state in the frame and XORs the key stream into out (DI) from in (CX).
#define OUTPUT \
	LOADW(0, Y12); LOADW(1, Y13); LOADW(2, Y14); LOADW(3, Y15); \
	OUT4(0, 0, 32, 64, 96, Y12, Y13, Y14, Y15); \
	LOADW(4, Y12); LOADW(5, Y13); LOADW(6, Y14); LOADW(7, Y15); \
	OUT4(1, 128, 160, 192, 224, Y12, Y13, Y14, Y15); \
	VMOVDQU 0(DX), Y12; VMOVDQU 32(DX), Y13; LOADW(10, Y14); LOADW(11, Y15); \
	OUT4(2, 256, 288, 320, 352, Y12, Y13, Y14, Y15); \
	LOADW(12, Y12); LOADW(13, Y13); LOADW(14, Y14); LOADW(15, Y15); \
	OUT4(3, 384, 416, 448, 480, Y12, Y13, Y14, Y15)

// func salsa20x8(out, in *byte, state *[16]uint32, ctr *[16]uint32)
TEXT ·salsa20x8(SB), NOSPLIT, $512-32
	MOVQ out+0(FP), DI
	MOVQ in+8(FP), CX
	MOVQ state+16(FP), SI
	MOVQ ctr+24(FP), DX

	// The working state: the input, with the counters per block.
	LOADW(0, Y0); VMOVDQU Y0, 0(SP)
	LOADW(1, Y0); VMOVDQU Y0, 32(SP)
	LOADW(2, Y0); VMOVDQU Y0, 64(SP)
	LOADW(3, Y0); VMOVDQU Y0, 96(SP)
	LOADW(4, Y0); VMOVDQU Y0, 128(SP)
	LOADW(5, Y0); VMOVDQU Y0, 160(SP)
	LOADW(6, Y0); VMOVDQU Y0, 192(SP)
	LOADW(7, Y0); VMOVDQU Y0, 224(SP)
	VMOVDQU 0(DX), Y0; VMOVDQU Y0, 256(SP)
	VMOVDQU 32(DX), Y0; VMOVDQU Y0, 288(SP)
	LOADW(10, Y0); VMOVDQU Y0, 320(SP)
	LOADW(11, Y0); VMOVDQU Y0, 352(SP)
	LOADW(12, Y0); VMOVDQU Y0, 384(SP)
	LOADW(13, Y0); VMOVDQU Y0, 416(SP)
	LOADW(14, Y0); VMOVDQU Y0, 448(SP)
	LOADW(15, Y0); VMOVDQU Y0, 480(SP)

	MOVQ $10, AX

rounds:
	// Column round: (0,4,8,12) (5,9,13,1) (10,14,2,6) (15,3,7,11).
	QR2(0, 128, 256, 384, 160, 288, 416, 32)
	QR2(320, 448, 64, 192, 480, 96, 224, 352)
	// Row round: (0,1,2,3) (5,6,7,4) (10,11,8,9) (15,12,13,14).
	QR2(0, 32, 64, 96, 160, 192, 224, 128)
	QR2(320, 352, 256, 288, 480, 384, 416, 448)
	DECQ AX
	JNZ  rounds

	// Add the input and XOR the key stream into out.
	OUTPUT
	VZEROUPPER
	RET

// STEP4 is one step of four quarter-rounds at once, all in registers:
// x ^= (y+z)<<<k for each (x, y, z), with Y16-Y19 as temporaries.
#define STEP4(k, x0, y0, z0, x1, y1, z1, x2, y2, z2, x3, y3, z3) \
	VPADDD y0, z0, Y16; VPADDD y1, z1, Y17; VPADDD y2, z2, Y18; VPADDD y3, z3, Y19; \
	VPROLD $k, Y16, Y16; VPROLD $k, Y17, Y17; VPROLD $k, Y18, Y18; VPROLD $k, Y19, Y19; \
	VPXORD Y16, x0, x0; VPXORD Y17, x1, x1; VPXORD Y18, x2, x2; VPXORD Y19, x3, x3

// QR4 runs the quarter-rounds (a,b,c,d) of four word sets at once.
#define QR4(a0, b0, c0, d0, a1, b1, c1, d1, a2, b2, c2, d2, a3, b3, c3, d3) \
	STEP4(7, b0, a0, d0, b1, a1, d1, b2, a2, d2, b3, a3, d3); \
	STEP4(9, c0, b0, a0, c1, b1, a1, c2, b2, a2, c3, b3, a3); \
	STEP4(13, d0, c0, b0, d1, c1, b1, d2, c2, b2, d3, c3, b3); \
	STEP4(18, a0, d0, c0, a1, d1, c1, a2, d2, c2, a3, d3, c3)

// func salsa20x8AVX512(out, in *byte, state *[16]uint32, ctr *[16]uint32)
//
// salsa20x8 with AVX-512VL: 32 vector registers hold the whole state
// (word i in Yi) and four quarter-rounds' temporaries, and VPROLD
// rotates in one instruction, so the rounds touch no memory and four
// quarter-rounds run side by side instead of two. The output is
// salsa20x8's code.
TEXT ·salsa20x8AVX512(SB), NOSPLIT, $512-32
	MOVQ out+0(FP), DI
	MOVQ in+8(FP), CX
	MOVQ state+16(FP), SI
	MOVQ ctr+24(FP), DX

	LOADW(0, Y0); LOADW(1, Y1); LOADW(2, Y2); LOADW(3, Y3)
	LOADW(4, Y4); LOADW(5, Y5); LOADW(6, Y6); LOADW(7, Y7)
	VMOVDQU 0(DX), Y8; VMOVDQU 32(DX), Y9; LOADW(10, Y10); LOADW(11, Y11)
	LOADW(12, Y12); LOADW(13, Y13); LOADW(14, Y14); LOADW(15, Y15)

	MOVQ $10, AX

rounds512:
	// Column round, then row round (see salsa20x8).
	QR4(Y0, Y4, Y8, Y12, Y5, Y9, Y13, Y1, Y10, Y14, Y2, Y6, Y15, Y3, Y7, Y11)
	QR4(Y0, Y1, Y2, Y3, Y5, Y6, Y7, Y4, Y10, Y11, Y8, Y9, Y15, Y12, Y13, Y14)
	DECQ AX
	JNZ  rounds512

	VMOVDQU Y0, 0(SP); VMOVDQU Y1, 32(SP); VMOVDQU Y2, 64(SP); VMOVDQU Y3, 96(SP)
	VMOVDQU Y4, 128(SP); VMOVDQU Y5, 160(SP); VMOVDQU Y6, 192(SP); VMOVDQU Y7, 224(SP)
	VMOVDQU Y8, 256(SP); VMOVDQU Y9, 288(SP); VMOVDQU Y10, 320(SP); VMOVDQU Y11, 352(SP)
	VMOVDQU Y12, 384(SP); VMOVDQU Y13, 416(SP); VMOVDQU Y14, 448(SP); VMOVDQU Y15, 480(SP)
	OUTPUT
	VZEROUPPER
	RET
