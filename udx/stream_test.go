package udx

import (
	"errors"
	"io"
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
