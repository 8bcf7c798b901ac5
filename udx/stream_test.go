package udx

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func transfer(t *testing.T, a, b *Stream, n int64, limit time.Duration) {
	t.Helper()
	type res struct {
		sum [32]byte
		n   int64
		err error
	}
	sent := make(chan res, 2)
	got := make(chan res, 2)
	go func() { s, err := sendAll(a, 1, n); sent <- res{sum: s, err: err} }()
	go func() { s, err := sendAll(b, 2, n); sent <- res{sum: s, err: err} }()
	go func() { s, k, err := recvAll(b); got <- res{s, k, err} }()
	go func() { s, k, err := recvAll(a); got <- res{s, k, err} }()
	to := time.After(limit)
	var sums, gots []res
	for len(sums)+len(gots) < 4 {
		select {
		case r := <-sent:
			if r.err != nil {
				t.Fatalf("send: %v", r.err)
			}
			sums = append(sums, r)
		case r := <-got:
			if r.err != nil {
				t.Fatalf("recv: %v", r.err)
			}
			gots = append(gots, r)
		case <-to:
			t.Fatalf("transfer of %d bytes each way did not finish in %v (a=%+v b=%+v)", n, limit, a.Stats(), b.Stats())
		}
	}
	for _, g := range gots {
		if g.n != n || (g.sum != sums[0].sum && g.sum != sums[1].sum) {
			t.Fatalf("received %d bytes, hash mismatch", g.n)
		}
	}
	if gots[0].sum == gots[1].sum {
		t.Fatal("both directions delivered the same stream")
	}
}

func TestLoopbackTransfer(t *testing.T) {
	sa, sb := udpSocket(t), udpSocket(t)
	a, b := pair(t, sa, sb, 1, 2)
	start := time.Now()
	const n = 64 << 20
	transfer(t, a, b, n, 60*time.Second)
	t.Logf("%d MiB each way in %v; a=%+v b=%+v", n>>20, time.Since(start), a.Stats(), b.Stats())
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a not closed after both ends")
	}
	<-b.Done()
	if a.Err() != nil || b.Err() != nil {
		t.Fatalf("errs %v %v", a.Err(), b.Err())
	}
}

func TestDestroySeenByPeer(t *testing.T) {
	sa, sb := udpSocket(t), udpSocket(t)
	a, b := pair(t, sa, sb, 1, 2)
	if _, err := a.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(b, buf); err != nil {
		t.Fatal(err)
	}
	a.Destroy()
	select {
	case <-b.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("DESTROY not seen")
	}
	if !errors.Is(b.Err(), ErrReset) {
		t.Fatalf("b.Err = %v", b.Err())
	}
	if _, err := b.Read(buf); !errors.Is(err, ErrReset) {
		t.Fatalf("read after reset: %v", err)
	}
}

// Write holds back once notsentMin bytes wait unsent, though the send
// buffer has room for far more: a peer that never ACKs lets the initial
// window (10 packets) leave, and then Write may queue only the not-sent
// limit, so another writer's bytes would wait behind 64 KiB, not 4 MiB.
func TestWriteNotSentLimit(t *testing.T) {
	sock := udpSocket(t)
	raw := rawPeer(t)
	st, _ := sock.NewStream(5, nil)
	st.Connect(sock, 6, raw.LocalAddr().(*net.UDPAddr).AddrPort())
	st.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := st.Write(make([]byte, 1<<20))
	if !errors.Is(err, errDeadline) {
		t.Fatalf("write: %d bytes, %v; want a deadline error", n, err)
	}
	if most := notsentMin + 2*initialCwnd*mtuMax; n < notsentMin || n > most {
		t.Fatalf("write took %d bytes before blocking, want %d to %d", n, notsentMin, most)
	}
	// 100 MB/s: 2 ms of it; a slow link: the 16 KiB floor; a fast one: the
	// send buffer.
	for _, c := range []struct {
		rate float64
		want int64
	}{{100, 200_000}, {1, notsentMin}, {10_000, defaultSendBuffer}} {
		if got := notsentLimit(c.rate, defaultSendBuffer); got != c.want {
			t.Errorf("notsentLimit(%v B/µs) = %d, want %d", c.rate, got, c.want)
		}
	}
}
