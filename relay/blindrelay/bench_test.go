package blindrelay

import (
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// oneWay pairs a and c through their relay, runs a secret-stream over the
// relayed streams and sends n bytes from a to c; it returns MB/s.
func oneWay(b *testing.B, a, c *peer, n int) float64 {
	b.Helper()
	ra, rc := pairBoth(b, a, c, newToken(b))
	ea, ec := secretPair(b, ra, rc, a.kp)
	data := markedData(b, n)
	ea.SetDeadline(time.Now().Add(120 * time.Second))
	ec.SetDeadline(time.Now().Add(120 * time.Second))
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := ea.Write(data)
		if err == nil {
			err = ea.CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, ec)
	d := time.Since(start)
	if err != nil || got != int64(n) {
		b.Fatalf("received %d bytes: %v", got, err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if want := sha256.Sum256(data); [32]byte(h.Sum(nil)) != want {
		b.Fatal("sha256 mismatch")
	}
	return float64(n) / d.Seconds() / 1e6
}

// BenchmarkRelayThroughput sends 64 MiB one way between two Go peers
// (secret-stream over the relayed UDX streams) through a Go relay and
// through the Node blind-relay, in the same run, and reports both rates
// and their ratio. The peers are identical; only the relay differs.
//
//	CI=true go test -run XXX -bench RelayThroughput -benchtime 1x ./relay/blindrelay/
func BenchmarkRelayThroughput(b *testing.B) {
	nodetest.Require(b)
	const n = 64 << 20
	var goRate, nodeRate float64
	// Warm up (page faults, GC sizing, Node's JIT) so the first measured
	// transfer is not a cold start.
	{
		relaySock := loopbackSocket(b)
		srv, err := NewServer(ServerOptions{Streams: relaySock})
		if err != nil {
			b.Fatal(err)
		}
		oneWay(b, connectGo(b, srv, relaySock), connectGo(b, srv, relaySock), 8<<20)
		srv.Close()
		r := startNodeRelay(b)
		oneWay(b, connectNodeRelay(b, r), connectNodeRelay(b, r), 8<<20)
	}
	b.ResetTimer()
	for range b.N {
		relaySock := loopbackSocket(b)
		srv, err := NewServer(ServerOptions{Streams: relaySock})
		if err != nil {
			b.Fatal(err)
		}
		goRate += oneWay(b, connectGo(b, srv, relaySock), connectGo(b, srv, relaySock), n)
		srv.Close()

		r := startNodeRelay(b)
		nodeRate += oneWay(b, connectNodeRelay(b, r), connectNodeRelay(b, r), n)
	}
	goRate /= float64(b.N)
	nodeRate /= float64(b.N)
	b.ReportMetric(goRate, "go-MB/s")
	b.ReportMetric(nodeRate, "node-MB/s")
	b.ReportMetric(goRate/nodeRate, "go/node")
	b.ReportMetric(0, "ns/op")
}
