package udx

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	// A MESSAGE larger than the pool's buffers (a jumbo datagram read
	// whole with GRO) is queued in a buffer of its own.
	big := bytes.Repeat([]byte{'j'}, 3*pktBufSize)
	b.deliverMessage(big)
	err = b.ReadMessageBatch(ctx, func(p []byte) {
		if !bytes.Equal(p, big) {
			t.Errorf("jumbo MESSAGE: %d bytes", len(p))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	a.Destroy()
	err = b.ReadMessageBatch(ctx, func(p []byte) { t.Errorf("message %q after the end", p) })
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after the peer's DESTROY: %v", err)
	}
}

// BatchWriter delivers every datagram once, in order, sizes mixed (runs
// of equal sizes go as GSO where the kernel has it), to an unconnected
// socket's destination and on a connected socket.
func TestBatchWriter(t *testing.T) {
	sink := mustUDP(t)
	defer sink.Close()
	sink.SetReadBuffer(4 << 20) // the whole burst
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	var ps [][]byte
	for i := range 80 {
		size := 1200
		if i%40 == 39 {
			size = 7 // ends a run
		}
		p := make([]byte, size)
		binary.BigEndian.PutUint16(p, uint16(i))
		ps = append(ps, p)
	}
	check := func(name string) {
		t.Helper()
		buf := make([]byte, 2048)
		sink.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := range ps {
			n, err := sink.Read(buf)
			if err != nil {
				t.Fatalf("%s: datagram %d: %v", name, i, err)
			}
			if n != len(ps[i]) || binary.BigEndian.Uint16(buf) != uint16(i) {
				t.Fatalf("%s: datagram %d: %d bytes, number %d", name, i, n, binary.BigEndian.Uint16(buf))
			}
		}
	}
	u := mustUDP(t)
	defer u.Close()
	NewBatchWriter(u).Write(ps, to)
	check("unconnected")
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	NewBatchWriter(c).Write(ps, to)
	check("connected")
}

// BatchReader takes what has arrived in batches of its size, in order,
// with the senders, and cuts a datagram larger than its buffers.
func TestBatchReader(t *testing.T) {
	sink, src := mustUDP(t), mustUDP(t)
	defer sink.Close()
	defer src.Close()
	to := sink.LocalAddr().(*net.UDPAddr)
	for i := range 10 {
		if _, err := src.WriteToUDP([]byte(fmt.Sprintf("d%d-long", i)), to); err != nil {
			t.Fatal(err)
		}
	}
	r := NewBatchReader(sink, 4, 2)
	from := src.LocalAddr().(*net.UDPAddr).AddrPort()
	var got []string
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	for calls := 0; len(got) < 10; calls++ {
		if calls == 10 {
			t.Fatalf("10 reads for %d datagrams", len(got))
		}
		err := r.Read(func(p []byte, a netip.AddrPort) {
			if a != from {
				t.Errorf("sender %v, want %v", a, from)
			}
			got = append(got, string(p))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(got) != "[d0 d1 d2 d3 d4 d5 d6 d7 d8 d9]" {
		t.Fatalf("read %q", got)
	}
}
