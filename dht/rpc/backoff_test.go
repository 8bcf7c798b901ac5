package rpc

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestFirstTimeout: a request with FirstTimeout retries after it, then
// after twice as long each time up to Timeout, and waits as long in all
// as plain attempts would: three lost requests cost 50+100+200 ms, not
// three Timeouts, and a peer that never answers is given up on after
// four Timeouts' worth of waiting (six sends here), not sooner.
func TestFirstTimeout(t *testing.T) {
	h, all := memNetwork(t, 2)
	a, b := all[1], all[2]
	to := serverAddr(b)
	var mu sync.Mutex
	var sends []time.Time
	lose := 0 // requests a→b still to lose; -1: all
	h.drop = func(from, dst netip.AddrPort, p []byte) bool {
		req, err := DecodeRequest(p)
		if err != nil || dst != to || !req.Internal || req.Command != CmdPing {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		sends = append(sends, time.Now())
		if lose == 0 {
			return false
		}
		if lose > 0 {
			lose--
		}
		return true
	}
	reset := func(n int) {
		mu.Lock()
		defer mu.Unlock()
		sends, lose = nil, n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := RequestOptions{Internal: true, Command: CmdPing, FirstTimeout: 50 * time.Millisecond, Timeout: 200 * time.Millisecond}

	reset(3)
	start := time.Now()
	res, err := a.Request(ctx, to, o)
	el := time.Since(start)
	if err != nil {
		t.Fatalf("three requests lost: %v", err)
	}
	mu.Lock()
	n := len(sends)
	mu.Unlock()
	t.Logf("three lost: answered after %v, %d sends, Sent %d", el, n, res.Sent)
	if n != 4 || res.Sent != 4 {
		t.Fatalf("%d sends (Sent %d), want 4", n, res.Sent)
	}
	if el < 300*time.Millisecond || el > 700*time.Millisecond {
		t.Fatalf("answered after %v, want about 350 ms (50+100+200)", el)
	}

	reset(-1)
	start = time.Now()
	_, err = a.Request(ctx, to, o)
	el = time.Since(start)
	mu.Lock()
	n = len(sends)
	mu.Unlock()
	t.Logf("all lost: %v after %v, %d sends", err, el, n)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if n != 6 || el < 900*time.Millisecond || el > 1500*time.Millisecond {
		t.Fatalf("gave up after %v and %d sends, want 950 ms and 6 (50+100+200+200+200+200 >= 4x200)", el, n)
	}

	// Without FirstTimeout: Timeout per attempt, four attempts.
	reset(-1)
	start = time.Now()
	o.FirstTimeout = 0
	_, err = a.Request(ctx, to, o)
	el = time.Since(start)
	mu.Lock()
	n = len(sends)
	mu.Unlock()
	if !errors.Is(err, ErrTimeout) || n != 4 || el < 750*time.Millisecond {
		t.Fatalf("plain: %v after %v and %d sends, want ErrTimeout after 800 ms and 4", err, el, n)
	}
}
