package tunnel

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// flowBatch hands each flow its datagrams in order, as copies, a run of
// one flow at a time; a flow with a batch writer gets its run in one
// batch on the socket.
func TestFlowBatch(t *testing.T) {
	var got []string
	rec := func(name string) func([]byte) {
		return func(p []byte) { got = append(got, name+":"+string(p)) }
	}
	f1, f2 := newFlow(ktFraming, rec("1")), newFlow(ktFraming, rec("2"))
	var b flowBatch
	p := []byte("a")
	b.add(f1, p)
	p[0] = 'x' // add copied it
	b.add(f1, []byte("b"))
	b.add(f2, []byte("c"))
	b.add(f1, []byte("d"))
	b.flush()
	b.flush()
	if want := "[1:a 1:b 2:c 1:d]"; fmt.Sprint(got) != want {
		t.Fatalf("delivered %v, want %s", got, want)
	}

	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	tc, err := net.DialUDP("udp4", nil, sink.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	f3 := newFlow(ktFraming, func([]byte) { t.Error("a datagram of a batch went alone") })
	if f3.deliverBatch = connBatchWriter(tc); f3.deliverBatch == nil {
		t.Fatal("no batch writer for a connected UDP socket")
	}
	const n = 3*writeBatchMax + 5 // several batches, the last partial
	for i := range n {
		b.add(f3, fmt.Appendf(nil, "d%03d", i))
	}
	b.flush()
	buf := make([]byte, 100)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range n {
		k, err := sink.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if want := fmt.Sprintf("d%03d", i); string(buf[:k]) != want {
			t.Fatalf("datagram %d: %q, want %q", i, buf[:k], want)
		}
	}
}

// A batch to a target that refuses datagrams (ICMP port unreachable:
// ECONNREFUSED on the next send) loses datagrams, as separate writes
// would, and returns; the writer works again once the target listens.
func TestBatchWriterRefused(t *testing.T) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := sink.LocalAddr().(*net.UDPAddr)
	sink.Close()
	tc, err := net.DialUDP("udp4", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	w := connBatchWriter(tc)
	ps := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			w.write(ps)
			time.Sleep(time.Millisecond)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writes to a refusing target did not return")
	}
	sink, err = net.ListenUDP("udp4", addr)
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	defer sink.Close()
	w.write(ps)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 10)
	if k, err := sink.Read(buf); err != nil || k != 1 {
		t.Fatalf("after the target came up: %q, %v", buf[:k], err)
	}
}
