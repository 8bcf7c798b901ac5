package protomux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// noLeaks fails the test if goroutines started during it are still running
// at its end (after the other cleanups).
func noLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func muxPair(t *testing.T) (*Mux, *Mux) {
	a, b := Pipe()
	ma, mb := New(a, Options{}), New(b, Options{})
	t.Cleanup(func() { ma.Close(); mb.Close() })
	return ma, mb
}

func TestGoToGo(t *testing.T) {
	noLeaks(t)
	ma, mb := muxPair(t)
	got := make(chan string, 16)
	mb.Pair("chat", nil, func(ctx context.Context, id []byte) {
		ch := mb.NewChannel(ChannelOptions{Protocol: "chat", ID: id})
		var reply *Message[string]
		reply = AddMessage(ch, String{}, func(c *Channel, s string) { reply.Send("re:" + s) })
		if err := ch.Open(nil); err != nil {
			t.Error(err)
		}
	})
	ch := ma.NewChannel(ChannelOptions{Protocol: "chat", ID: []byte("room"), OnClose: func(c *Channel, r bool) { got <- "closed" }})
	msg := AddMessage(ch, String{}, func(c *Channel, s string) { got <- s })
	if err := msg.Send("early"); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("Send before Open: %v", err)
	}
	ch.Open(nil)
	msg.Send("one") // before the peer's OPEN: buffered by the peer
	if ok, err := ch.WaitOpened(testCtx(t)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	msg.Send("two")
	for _, w := range []string{"re:one", "re:two"} {
		if g := <-got; g != w {
			t.Fatalf("got %q want %q", g, w)
		}
	}
	if !ma.Opened("chat", []byte("room")) {
		t.Fatal("Opened false")
	}
	dup := ma.NewChannel(ChannelOptions{Protocol: "chat", ID: []byte("room")})
	if err := dup.Open(nil); !errors.Is(err, ErrDuplicateChannel) {
		t.Fatalf("duplicate: %v", err)
	}
	mb.Close()
	if g := <-got; g != "closed" {
		t.Fatal(g)
	}
	<-ma.Done()
	if err := ma.Err(); !errors.Is(err, ErrTransportClosed) {
		t.Fatalf("peer closed: %v", err)
	}
	if err := msg.Send("x"); err == nil {
		t.Fatal("Send after close")
	}
	ma.Close()
	ma.Close() // idempotent
}

func TestDecodeErrorsDestroy(t *testing.T) {
	noLeaks(t)
	for _, tc := range []struct {
		name, frame string
		want        error
	}{
		{"cut type", "05", ErrBadFrame},
		{"cut open", "000105", ErrBadFrame},
		{"open string past end", "0001010a41", ErrBadFrame},
		{"cut varint", "fd01", ErrBadFrame},
		{"cut batch switch", "0000010200ff00", ErrBadFrame},
		{"open skips ids", "0001050178" + "00", ErrInvalidOpen},
		{"reject unknown", "000207", ErrInvalidReject},
		{"nested batches", nestedBatches(9), ErrBadFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := Pipe()
			m := New(a, Options{})
			defer m.Close()
			b.WriteMessage(mustHex(t, tc.frame))
			select {
			case <-m.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("mux survived")
			}
			if !errors.Is(m.Err(), tc.want) {
				t.Fatalf("err %v, want %v", m.Err(), tc.want)
			}
			if err := m.Close(); !errors.Is(err, tc.want) {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestIgnored(t *testing.T) {
	noLeaks(t)
	r := newRawMux(t)
	got := make(chan string, 4)
	ch := r.m.NewChannel(ChannelOptions{Protocol: "a"})
	AddMessage(ch, Raw{}, func(c *Channel, b []byte) { got <- string(b) })
	ch.Open(nil)
	r.inject("")                  // empty frame
	r.inject("0900aa")            // unknown channel
	r.inject("0009")              // unknown control type
	r.inject("000300")            // close of id 0
	r.inject("000309")            // close of unknown id
	r.inject("000100016100")      // open of id 0
	r.inject("00010101" + "6100") // the peer's "a"
	// Pairing completes on the dispatcher; messages sent before that are
	// the peer's error, not what this test is about.
	if ok, err := ch.WaitOpened(testCtx(t)); !ok || err != nil {
		t.Fatalf("channel did not open: %v %v", ok, err)
	}
	r.inject("0107ff")               // unknown type
	r.inject("0100" + "6869")        // "hi"
	r.inject("00000104020068690000") // batch: clamp, then a switch to 0 with nothing after
	// The batch's entry is message type 2 on channel 1, which has only
	// type 0: ignored like "0107ff". So exactly one "hi" arrives.
	select {
	case g := <-got:
		if g != "hi" {
			t.Fatal(g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message was lost")
	}
	select {
	case g := <-got:
		t.Fatalf("an ignored frame was delivered: %q", g)
	case <-time.After(100 * time.Millisecond):
	}
	if err := r.m.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestBadMessageDestroys(t *testing.T) {
	noLeaks(t)
	r := newRawMux(t)
	ch := r.m.NewChannel(ChannelOptions{Protocol: "a"})
	AddMessage(ch, String{}, nil)
	ch.Open(nil)
	r.inject("00010101" + "6100")
	if err := r.m.inject(testCtx(t), mustHex(t, "010005")); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("got %v", err)
	}
	<-r.m.Done()
	if !errors.Is(r.m.Err(), ErrBadMessage) {
		t.Fatal(r.m.Err())
	}
}

// TestPendingBounded: messages for a channel the peer opened and this side
// has not accepted are buffered up to 32 KiB (512 + len each), then the
// mux stops reading; accepting delivers them all in order.
func TestPendingBounded(t *testing.T) {
	noLeaks(t)
	a, b := Pipe()
	m := New(a, Options{})
	defer m.Close()
	accept := make(chan struct{})
	m.Pair("slow", nil, func(ctx context.Context, id []byte) {
		select {
		case <-accept:
		case <-ctx.Done():
		}
	})
	b.WriteMessage(mustHex(t, "000101"+"04"+"736c6f77"+"00")) // OPEN id 1 "slow", no key
	const n = 200
	body := bytes.Repeat([]byte{'x'}, 100)
	for range n {
		b.WriteMessage(append([]byte{1, 0}, body...))
	}
	deadline := time.Now().Add(5 * time.Second)
	var buffered int
	for {
		m.mu.Lock()
		buffered = m.buffered
		m.mu.Unlock()
		if buffered > MaxBuffered || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let it read more if it would
	m.mu.Lock()
	buffered = m.buffered
	m.mu.Unlock()
	if max := MaxBuffered + PendingEntryOverhead + len(body); buffered <= MaxBuffered || buffered > max {
		t.Fatalf("buffered %d, want just above %d (≤ %d)", buffered, MaxBuffered, max)
	}
	count := make(chan int, n)
	i := 0
	ch := m.NewChannel(ChannelOptions{Protocol: "slow"})
	AddMessage(ch, Raw{}, func(c *Channel, b []byte) { i++; count <- i })
	ch.Open(nil)
	close(accept)
	for want := 1; want <= n; want++ {
		select {
		case got := <-count:
			if got != want {
				t.Fatal(got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of %d messages", want-1, n)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.buffered != 0 {
		t.Fatalf("buffered %d after drain", m.buffered)
	}
}

// TestRejectDropsPending: a pair function that does not accept leads to
// REJECT and the buffer is released.
func TestRejectDropsPending(t *testing.T) {
	noLeaks(t)
	r := newRawMux(t)
	release := make(chan struct{})
	r.m.Pair("p", nil, func(ctx context.Context, id []byte) { <-release })
	r.inject("00010101" + "70" + "00")
	r.inject("0100aaaa")
	close(release)
	if err := r.m.sync(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	r.m.sync(testCtx(t))
	r.m.mu.Lock()
	buf, infos := r.m.buffered, len(r.m.infos)
	r.m.mu.Unlock()
	if buf != 0 || infos != 0 {
		t.Fatalf("buffered %d infos %d", buf, infos)
	}
	if f := r.frames(); len(f) != 1 || f[0] != "000201" {
		t.Fatalf("frames %v", f)
	}
}

func TestBacklog(t *testing.T) {
	noLeaks(t)
	a, b := Pipe()
	m := New(a, Options{MaxBacklog: 4})
	defer m.Close()
	m.Pair("p", nil, func(ctx context.Context, id []byte) { <-ctx.Done() })
	for i := 1; i <= 5; i++ {
		b.WriteMessage(append([]byte{0, 1, byte(i), 1, 'p', 1}, byte(i)))
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("mux survived")
	}
	if !errors.Is(m.Err(), ErrBacklog) {
		t.Fatal(m.Err())
	}
}

func TestCloseOfPendingRejects(t *testing.T) {
	noLeaks(t)
	r := newRawMux(t)
	r.m.Pair("p", nil, func(ctx context.Context, id []byte) { <-ctx.Done() })
	r.inject("00010101" + "70" + "00")
	r.inject("000301")
	if f := r.frames(); len(f) != 1 || f[0] != "000201" {
		t.Fatalf("frames %v", f)
	}
}

func TestWriteQueueBound(t *testing.T) {
	noLeaks(t)
	a, _ := blockingPipe()
	m := New(a, Options{MaxWriteQueue: 1000})
	defer m.Close()
	ch := m.NewChannel(ChannelOptions{Protocol: "w"})
	msg := AddMessage(ch, Raw{}, nil)
	ch.Open(nil)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = msg.Send(make([]byte, 100))
	}
	if !errors.Is(err, ErrWriteQueueFull) {
		t.Fatalf("err %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush: %v", err)
	}
}

// blockingPipe's writes block until Close.
func blockingPipe() (Framed, Framed) {
	a, b := Pipe()
	return &blocking{Framed: a, done: make(chan struct{})}, b
}

type blocking struct {
	Framed
	done chan struct{}
	once bool
}

func (b *blocking) WriteMessage([]byte) error { <-b.done; return ErrClosed }
func (b *blocking) Close() error {
	if !b.once {
		b.once = true
		close(b.done)
	}
	return b.Framed.Close()
}

// nestedBatches is a frame whose message is wrapped in depth batches:
// the frame is "00" (channel 0) then the outer entry, and each entry is
// "00" (type batch) "00" (channel 0) length, then the next entry.
func nestedBatches(depth int) string {
	entry := "0301"
	for range depth {
		entry = "00" + "00" + fmt.Sprintf("%02x", len(entry)/2) + entry
	}
	return "00" + entry
}
