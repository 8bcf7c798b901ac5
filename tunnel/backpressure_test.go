package tunnel

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// Pushing a lot of data at a reader that stalls, then reads slowly, blocks
// the writer instead of piling the data up in memory anywhere between.
func TestBackpressure(t *testing.T) {
	conntest.CheckGoroutines(t)
	total := int64(256 << 20)
	if testing.Short() {
		total = 32 << 20
	}
	release := make(chan struct{})
	tg := newTarget(t, func(c *net.TCPConn) {
		<-release
		buf := make([]byte, 32<<10)
		var n int64
		for i := 0; ; i++ {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				break
			}
			if i%64 == 0 { // slow: a pause every 2 MiB or less
				time.Sleep(time.Millisecond)
			}
		}
		fmt.Fprintf(c, "%d", n)
	})
	r := newRig(t, tg.addr(), ExposeOptions{}, &ForwardOptions{})
	// Registered after the rig's and target's cleanups so that it runs
	// before them: a failed check must not leave the target's handler
	// waiting forever, and its cleanup with it.
	var releaseOnce sync.Once
	releaseTarget := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseTarget)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	var stopOnce sync.Once
	stopSampler := func() { stopOnce.Do(func() { close(stopSampling) }); <-sampled }
	t.Cleanup(stopSampler)
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()

	c := dialTCP(t, r.fwdAddr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	var written atomic.Int64
	werr := make(chan error, 1)
	go func() {
		chunk := make([]byte, 32<<10)
		for written.Load() < total {
			m, err := c.Write(chunk)
			written.Add(int64(m))
			if err != nil {
				werr <- err
				return
			}
		}
		werr <- c.CloseWrite()
	}()

	// While the reader stalls, the writer must stop: what it got out is
	// what kernel socket buffers and one yamux window hold, not 256 MiB.
	time.Sleep(700 * time.Millisecond)
	w1 := written.Load()
	time.Sleep(300 * time.Millisecond)
	w2 := written.Load()
	t.Logf("writer got %d KiB out while the reader stalled", w2>>10)
	if w1 != w2 {
		t.Fatalf("writer kept going while the reader stalled: %d then %d bytes", w1, w2)
	}
	if w2 >= 48<<20 {
		t.Fatalf("writer pushed %d MiB into a stalled reader", w2>>20)
	}
	releaseTarget()

	start := time.Now()
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != fmt.Sprint(total) {
		t.Fatalf("reader got %q bytes, want %d (%v)", reply, total, err)
	}
	stopSampler()
	el := time.Since(start)
	growth := int64(peak.Load()) - int64(base)
	t.Logf("%d MiB in %v (%.0f MiB/s), peak heap growth %.1f MiB", total>>20, el.Round(time.Millisecond), float64(total>>20)/el.Seconds(), float64(growth)/(1<<20))
	if growth > 32<<20 {
		t.Fatalf("heap grew by %d MiB pushing %d MiB", growth>>20, total>>20)
	}
	if d := r.n.dials.Load(); d != 1 {
		t.Fatalf("dials %d", d)
	}
}
