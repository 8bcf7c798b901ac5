package secretstream

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

var benchSizes = []int{1 << 10, 16 << 10, 64 << 10, 1000, 16<<10 + 5}

// BenchmarkSecretstream measures encrypt+decrypt of one message (the fast
// in-place path a Conn uses) next to bare XChaCha20-Poly1305 Seal+Open of
// the same size, and reports secretstream's throughput as a fraction of
// the bare AEAD's ("ratio"). Sizes that are 0 or 8 mod 16 take the
// single-AEAD path; the others (1000, 16 KiB + 5) the AEAD-as-ChaCha20
// plus separate Poly1305 path (see xchacha.go).
func BenchmarkSecretstream(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("%d", n), func(b *testing.B) {
			b.ReportAllocs()
			benchOurs(b, n)
			b.StopTimer()
			oursNs := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			bareNs := bareNsPerOp(n)
			b.ReportMetric(bareNs/oursNs, "ratio")
			b.ReportMetric(float64(n)/bareNs*1e3, "bareMB/s")
		})
	}
}

// BenchmarkBareXChaCha20Poly1305 is the reference on its own.
func BenchmarkBareXChaCha20Poly1305(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("%d", n), func(b *testing.B) { b.ReportAllocs(); benchBare(b, n) })
	}
}

var bareCache = map[int]float64{}

// bareNsPerOp times bare XChaCha20-Poly1305 Seal+Open of n bytes for about
// 300 ms (testing.Benchmark cannot nest inside a running benchmark).
func bareNsPerOp(n int) float64 {
	if v, ok := bareCache[n]; ok {
		return v
	}
	a, _ := chacha20poly1305.NewX(make([]byte, 32))
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	buf := make([]byte, n, n+16)
	ops := 0
	start := time.Now()
	for time.Since(start) < 300*time.Millisecond {
		for i := 0; i < 64; i++ {
			nonce[0]++
			c := a.Seal(buf[:0], nonce, buf[:n], nil)
			a.Open(c[:0], nonce, c, nil)
		}
		ops += 64
	}
	v := float64(time.Since(start).Nanoseconds()) / float64(ops)
	bareCache[n] = v
	return v
}

func benchOurs(b *testing.B, n int) {
	k, h := vectorKeyHeader()
	var s, p xstream
	s.init(&k, &h)
	p.init(&k, &h)
	buf := make([]byte, headroom+n, headroom+n+16)
	b.SetBytes(int64(n))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := s.sealInPlace(buf[:headroom+n], TagMessage)
		if _, _, err := p.openInPlace(buf[:headroom-1+len(c)]); err != nil {
			b.Fatal(err)
		}
	}
}

func benchBare(b *testing.B, n int) {
	a, _ := chacha20poly1305.NewX(make([]byte, 32))
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	buf := make([]byte, n, n+16)
	b.SetBytes(int64(n))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nonce[0]++
		c := a.Seal(buf[:0], nonce, buf[:n], nil)
		if _, err := a.Open(c[:0], nonce, c, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnPipe measures a Conn end to end over net.Pipe (one writer,
// one reader, 64 KiB writes).
func BenchmarkConnPipe(b *testing.B) {
	x, y := net.Pipe()
	c1, c2 := wrap(b, x, y, Options{}, Options{})
	defer c2.Close()
	msg := make([]byte, 64<<10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, c2)
	}()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c1.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	c1.Close()
	<-done
}
