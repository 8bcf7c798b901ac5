package secretstream

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"testing"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/salsa20/salsa"
)

// xsalsaSeal and xsalsaOpen are secretbox, byte for byte, at every length
// around the eight-block (512-byte) steps, with dst of any capacity; a
// flipped bit anywhere fails authentication.
func TestXSalsaIsSecretbox(t *testing.T) {
	if !hasSalsa20x8 {
		t.Log("no AVX2 here: xsalsaSeal is secretbox.Seal")
	}
	eachSalsa(t, testXSalsaIsSecretbox)
}

// eachSalsa runs f with the AVX2 code and, where the CPU has it, the
// AVX-512 code.
func eachSalsa(t *testing.T, f func(t *testing.T)) {
	had := useAVX512
	defer func() { useAVX512 = had }()
	useAVX512 = false
	t.Run("avx2", f)
	if had {
		useAVX512 = true
		t.Run("avx512", f)
	}
}

func testXSalsaIsSecretbox(t *testing.T) {
	var key [32]byte
	var nonce [24]byte
	msg := make([]byte, 3*512+100)
	for _, n := range lengths() {
		rand.Read(key[:])
		rand.Read(nonce[:])
		rand.Read(msg[:n])
		want := secretbox.Seal([]byte("prefix"), msg[:n], &nonce, &key)
		got := xsalsaSeal([]byte("prefix"), msg[:n], &nonce, &key)
		if !bytes.Equal(got, want) {
			t.Fatalf("length %d: sealed differently from secretbox", n)
		}
		box := got[len("prefix"):]
		pt, ok := xsalsaOpen(make([]byte, 0, n+64), box, &nonce, &key)
		if !ok || !bytes.Equal(pt, msg[:n]) {
			t.Fatalf("length %d: opened %v, plaintext differs: %v", n, ok, !bytes.Equal(pt, msg[:n]))
		}
		bad := bytes.Clone(box)
		bad[len(bad)/2] ^= 1 << (n % 8)
		spare := bytes.Repeat([]byte{0xaa}, n+64)
		if _, ok := xsalsaOpen(spare[:0], bad, &nonce, &key); ok {
			t.Fatalf("length %d: a flipped bit authenticated", n)
		}
		if bytes.Count(spare, []byte{0xaa}) != len(spare) {
			t.Fatalf("length %d: a forgery was decrypted into dst", n)
		}
	}
}

func lengths() []int {
	var ns []int
	for n := 0; n <= 3*512+100; n++ {
		if n < 80 || n%512 < 40 || n%512 > 470 || n%97 == 0 {
			ns = append(ns, n)
		}
	}
	return ns
}

// The counter's high word: blocks past 2^32 carry into word 9.
func TestXSalsaCounterCarry(t *testing.T) {
	if !hasSalsa20x8 {
		t.Skip("no AVX2 here")
	}
	eachSalsa(t, testXSalsaCounterCarry)
}

func testXSalsaCounterCarry(t *testing.T) {
	var key [32]byte
	var nonce [24]byte
	rand.Read(key[:])
	rand.Read(nonce[:])
	var st xsalsaStream
	st.init(&nonce, &key)
	base := uint64(1<<32 - 3)
	st.block = base
	out := make([]byte, 512)
	st.eight(out, make([]byte, 512))
	var sub [32]byte
	salsa.HSalsa20(&sub, (*[16]byte)(nonce[:16]), &key, &salsa.Sigma)
	want := make([]byte, 512)
	var counter [16]byte
	copy(counter[:], nonce[16:])
	for i := range 8 {
		binary.LittleEndian.PutUint64(counter[8:], base+uint64(i))
		salsaBlock(want[64*i:64*i+64], &counter, &sub)
	}
	if !bytes.Equal(out, want) {
		t.Fatal("key stream across 2^32 blocks differs from x/crypto's")
	}
}

func salsaBlock(out []byte, counter *[16]byte, key *[32]byte) {
	salsa.XORKeyStream(out, make([]byte, 64), counter, key)
}

// BenchmarkSealDatagram seals a 1200-byte datagram as keytunnel's UDP
// flows do (xsalsa) and with x/crypto's secretbox.
func BenchmarkSealDatagram(b *testing.B) {
	var key [32]byte
	var nonce [24]byte
	msg := make([]byte, 1200)
	out := make([]byte, 0, 1300)
	had := useAVX512
	defer func() { useAVX512 = had }()
	for _, avx512 := range []bool{false, true} {
		if avx512 && !had {
			continue
		}
		useAVX512 = avx512
		name := map[bool]string{false: "xsalsa-avx2", true: "xsalsa-avx512"}[avx512]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				xsalsaSeal(out[:0], msg, &nonce, &key)
			}
		})
	}
	b.Run("secretbox", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			secretbox.Seal(out[:0], msg, &nonce, &key)
		}
	})
}
