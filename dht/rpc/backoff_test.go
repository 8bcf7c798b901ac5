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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := RequestOptions{Internal: true, Command: CmdPing, FirstTimeout: 50 * time.Millisecond, Timeout: 200 * time.Millisecond}
	// request loses the first n sends (-1: all) and returns the reply,
	// the time taken, the sends and the error.
	request := func(n int) (*Response, time.Duration, int, error) {
		mu.Lock()
		sends, lose = nil, n
		mu.Unlock()
		start := time.Now()
		res, err := a.Request(ctx, to, o)
		el := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		return res, el, len(sends), err
	}

	res, el, n, err := request(3)
	if err != nil {
		t.Fatalf("three requests lost: %v", err)
	}
	t.Logf("three lost: answered after %v, %d sends, Sent %d", el, n, res.Sent)
	if n != 4 || res.Sent != 4 {
		t.Fatalf("%d sends (Sent %d), want 4", n, res.Sent)
	}
	if el < 300*time.Millisecond || el > 700*time.Millisecond {
		t.Fatalf("answered after %v, want about 350 ms (50+100+200)", el)
	}

	_, el, n, err = request(-1)
	t.Logf("all lost: %v after %v, %d sends", err, el, n)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if n != 6 || el < 900*time.Millisecond || el > 1500*time.Millisecond {
		t.Fatalf("gave up after %v and %d sends, want 950 ms and 6 (50+100+200+200+200+200 >= 4x200)", el, n)
	}

	// Without FirstTimeout: Timeout per attempt, four attempts.
	o.FirstTimeout = 0
	_, el, n, err = request(-1)
	if !errors.Is(err, ErrTimeout) || n != 4 || el < 750*time.Millisecond {
		t.Fatalf("plain: %v after %v and %d sends, want ErrTimeout after 800 ms and 4", err, el, n)
	}
}

// TestQueryFirstAttemptsLost: every first attempt of a lookup's requests
// is lost (a burst takes the requests a query sends together). To nodes
// it has heard from, the querier retries after four of their round trips
// (at least 150 ms), so the lookup ends in a few hundred ms, not after
// dht-rpc's 1 s per request.
func TestQueryFirstAttemptsLost(t *testing.T) {
	h, all := memNetwork(t, 8)
	a := all[1]
	mine := map[netip.AddrPort]bool{}
	for _, c := range a.conns {
		if ap, ok := addrPort(c.LocalAddr()); ok {
			mine[ap] = true
		}
	}
	var mu sync.Mutex
	seen := map[uint16]bool{}
	lost := 0
	h.drop = func(from, to netip.AddrPort, b []byte) bool {
		req, err := DecodeRequest(b)
		if err != nil || !mine[from] || !req.Internal || req.Command != CmdFindNode {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[req.TID] {
			return false
		}
		seen[req.TID] = true
		lost++
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var target ID
	target[0] = 0x5a
	start := time.Now()
	q := a.FindNode(ctx, target, nil)
	if err := q.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	mu.Lock()
	n := lost
	mu.Unlock()
	ok, _ := q.Counts()
	t.Logf("lookup with every first attempt lost (%d): %v, %d replies", n, el, ok)
	if n == 0 || ok == 0 {
		t.Fatalf("%d requests lost, %d replies: the test did not test anything", n, ok)
	}
	if el > 800*time.Millisecond {
		t.Fatalf("lookup took %v: its retries waited dht-rpc's 1 s instead of the nodes' round trips", el)
	}
}
