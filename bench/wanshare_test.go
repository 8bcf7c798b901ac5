package bench

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
)

// BenchmarkWANShare runs a download through keytunnel beside a direct
// kernel TCP download (CUBIC, then BBR) over the same emulated link, and
// reports what each received over the last 10 s of 15: a sender that
// backs off from a queue it did not build gives the link away to the
// loss-based flows a home link carries beside it.
//
//	share-vs-cubic, share-vs-bbr   keytunnel's fraction of the two flows' bytes
func BenchmarkWANShare(b *testing.B) {
	// Without loss CUBIC fills the router's buffer, as it does on
	// the clean paths most users have; with the profiles' loss it never
	// gets near the link's rate.
	clean := natlab.Transatlantic
	clean.Name, clean.Up.Loss, clean.Down.Loss = "transatlantic-lossless", 0, 0
	for _, prof := range []natlab.Profile{clean, natlab.Transatlantic, natlab.Mobile} {
		b.Run(prof.Name, func(b *testing.B) {
			w := newWANLab(b, prof)
			kt := w.keytunnel(b)
			direct := w.srv.AddrPort(w.svcPort).String()
			for _, cc := range []struct {
				name string
				b    byte
			}{{"cubic", 'c'}, {"bbr", 'b'}} {
				got := w.share(b, []string{kt, direct}, []byte{'-', cc.b}, 15*time.Second, 5*time.Second)
				b.ReportMetric(got[0]/(got[0]+got[1]), "share-vs-"+cc.name)
				b.Logf("%s: keytunnel %.2f MB/s, kernel TCP %s %.2f MB/s (link %.2f)", prof.Name, got[0]/1e6, cc.name, got[1]/1e6, float64(prof.Rate)/8e6)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// share runs one download per address at once for d and returns each
// one's bytes per second after warm.
func (w *wanLab) share(tb testing.TB, addrs []string, ccs []byte, d, warm time.Duration) []float64 {
	tb.Helper()
	counts := make([]atomic.Int64, len(addrs))
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, addr := range addrs {
		c := w.dial(tb, addr)
		defer c.Close()
		var req [10]byte
		req[0], req[1] = cmdDown, ccs[i]
		binary.BigEndian.PutUint64(req[2:], w.capacity(d+5*time.Second))
		if _, err := c.Write(req[:]); err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			countReads(c, &counts[i])
		}()
	}
	time.Sleep(warm)
	base := make([]int64, len(addrs))
	for i := range counts {
		base[i] = counts[i].Load()
	}
	time.Sleep(d - warm)
	out := make([]float64, len(addrs))
	for i := range counts {
		out[i] = float64(counts[i].Load()-base[i]) / (d - warm).Seconds()
	}
	return out
}
