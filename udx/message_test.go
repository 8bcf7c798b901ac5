package udx

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// ReadMessageBatch hands over every MESSAGE queued by then, in order,
// mixes with ReadMessage, and reports the stream's end.
func TestReadMessageBatch(t *testing.T) {
	sa, sb := udpSocket(t), udpSocket(t)
	a, b := pair(t, sa, sb, 1, 2)
	const n = 200
	for i := range n {
		if err := a.Send(fmt.Appendf(nil, "m%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := ctxTimeout(10 * time.Second)
	defer cancel()
	m, err := b.ReadMessage(ctx)
	if err != nil || string(m) != "m000" {
		t.Fatalf("ReadMessage: %q, %v", m, err)
	}
	// Once the rest have arrived, one call takes them all.
	for queued := 0; queued < n-1; {
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d messages arrived", queued, n-1)
		case <-time.After(time.Millisecond):
		}
		b.mu.Lock()
		queued = len(b.msgs)
		b.mu.Unlock()
	}
	next := 1
	err = b.ReadMessageBatch(ctx, func(p []byte) {
		if want := fmt.Sprintf("m%03d", next); string(p) != want {
			t.Fatalf("message %d: %q, want %q", next, p, want)
		}
		next++
	})
	if err != nil || next != n {
		t.Fatalf("one batch: %d messages, %v", next-1, err)
	}
	a.Destroy()
	err = b.ReadMessageBatch(ctx, func(p []byte) { t.Errorf("message %q after the end", p) })
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after the peer's DESTROY: %v", err)
	}
}
