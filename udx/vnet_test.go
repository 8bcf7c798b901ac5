package udx

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/vnet"
)

func vnetPair(t testing.TB, cfg vnet.Config) (*Socket, *Socket) {
	t.Helper()
	nw := vnet.New(cfg)
	t.Cleanup(func() { nw.Close() })
	mk := func() *Socket {
		c, err := nw.Listen(addrZero)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewSocket(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return mk(), mk()
}

// lossySize is the per-direction size of the lossy vnet transfer; the race
// detector build uses a smaller one (see race_test.go).
func lossySize() int64 {
	if v := os.Getenv("UDX_LOSSY_MIB"); v != "" {
		n, _ := strconv.Atoi(v)
		return int64(n) << 20
	}
	return lossyDefault
}

func TestVnetLossyTransfer(t *testing.T) {
	sa, sb := vnetPair(t, vnet.Config{Seed: 42, Loss: 0.05, Duplicate: 0.01, Reorder: 0.02,
		Delay: 50 * time.Millisecond, ReorderDelay: 5 * time.Millisecond, RecvQueue: 16384})
	a, b := pair(t, sa, sb, 10, 20)
	n := lossySize()
	start := time.Now()
	transferOne(t, a, b, n, 120*time.Second)
	el := time.Since(start)
	t.Logf("%d MiB a→b in %v (%.1f MB/s); a=%+v", n>>20, el, float64(n)/el.Seconds()/1e6, a.Stats())
}

func TestVnetBothWays(t *testing.T) {
	sa, sb := vnetPair(t, vnet.Config{Seed: 3, Loss: 0.02, Duplicate: 0.01, Reorder: 0.02,
		Delay: 10 * time.Millisecond, MTU: 1400})
	a, b := pair(t, sa, sb, 1, 2)
	transfer(t, a, b, 16<<20, 60*time.Second)
	if st := a.Stats(); st.MTU-28 > 1400 {
		t.Fatalf("MTU %d: UDP payload above the link's 1400", st.MTU)
	}
}

// transferOne sends n bytes a→b and checks the SHA-256.
func transferOne(t *testing.T, a, b *Stream, n int64, limit time.Duration) {
	t.Helper()
	type res struct {
		sum [32]byte
		n   int64
		err error
	}
	sent, got := make(chan res, 1), make(chan res, 1)
	go func() { s, err := sendAll(a, 9, n); sent <- res{sum: s, err: err} }()
	go func() { s, k, err := recvAll(b); got <- res{s, k, err} }()
	var sr, gr res
	to := time.After(limit)
	for i := 0; i < 2; i++ {
		select {
		case sr = <-sent:
			if sr.err != nil {
				t.Fatal(sr.err)
			}
		case gr = <-got:
			if gr.err != nil {
				t.Fatal(gr.err)
			}
		case <-to:
			t.Fatalf("timeout after %v: a=%+v b=%+v", limit, a.Stats(), b.Stats())
		}
	}
	if gr.n != n || gr.sum != sr.sum {
		t.Fatalf("got %d bytes (want %d), sha256 equal: %v", gr.n, n, gr.sum == sr.sum)
	}
}
