package udx

import (
	"bytes"
	"net"
	"net/netip"
	"reflect"
	"testing"
)

func TestGSORun(t *testing.T) {
	a := netip.MustParseAddrPort("127.0.0.1:1000")
	b := netip.MustParseAddrPort("127.0.0.1:2000")
	msg := func(n int, to netip.AddrPort) txMsg { return txMsg{b: make([]byte, n), addr: to} }
	msgs := func(ms ...txMsg) []txMsg { return ms }
	for _, tc := range []struct {
		name     string
		msgs     []txMsg
		maxSegs  int
		maxBytes int
		want     int
	}{
		{"empty", nil, 64, maxGSOBytes, 0},
		{"one", msgs(msg(100, a)), 64, maxGSOBytes, 1},
		{"equal", msgs(msg(100, a), msg(100, a), msg(100, a)), 64, maxGSOBytes, 3},
		{"shorter last", msgs(msg(100, a), msg(100, a), msg(40, a), msg(100, a)), 64, maxGSOBytes, 3},
		{"longer second", msgs(msg(100, a), msg(101, a)), 64, maxGSOBytes, 1},
		{"other destination", msgs(msg(100, a), msg(100, a), msg(100, b)), 64, maxGSOBytes, 2},
		{"same destination as *net.UDPAddr", msgs(msg(100, a), txMsg{b: make([]byte, 100), uaddr: net.UDPAddrFromAddrPort(a)}), 64, maxGSOBytes, 2},
		{"segment cap", msgs(msg(10, a), msg(10, a), msg(10, a), msg(10, a)), 3, maxGSOBytes, 3},
		{"byte cap", msgs(msg(100, a), msg(100, a), msg(100, a)), 64, 250, 2},
		{"empty datagram first", msgs(msg(0, a), msg(0, a)), 64, maxGSOBytes, 1},
		{"empty datagram after", msgs(msg(10, a), msg(0, a)), 64, maxGSOBytes, 1},
	} {
		if got := gsoRun(tc.msgs, tc.maxSegs, tc.maxBytes); got != tc.want {
			t.Errorf("%s: gsoRun = %d, want %d", tc.name, got, tc.want)
		}
	}
	// Full-size udx packets: a run stops at the byte limit of one datagram.
	var full []txMsg
	for range 100 {
		full = append(full, msg(1472, a))
	}
	if got, want := gsoRun(full, maxGSOSegments, maxGSOBytes), maxGSOBytes/1472; got != want {
		t.Errorf("1472-byte datagrams: run of %d, want %d", got, want)
	}
}

func TestSplitGRO(t *testing.T) {
	from := netip.MustParseAddrPort("127.0.0.1:1000")
	big := make([]byte, 6500)
	for i := range big {
		big[i] = byte(i * 7)
	}
	data := big[:250]
	for _, tc := range []struct {
		name string
		b    []byte
		seg  int
		room int
		want []int // datagram lengths
	}{
		{"not coalesced", data, 0, 8, []int{250}},
		{"even", data[:200], 100, 8, []int{100, 100}},
		{"shorter last", data, 100, 8, []int{100, 100, 50}},
		{"segment as long as the buffer", data[:100], 100, 8, []int{100}},
		{"segment longer than the buffer", data[:50], 100, 8, []int{50}},
		{"empty datagram", data[:0], 0, 8, []int{0}},
		{"no room for all", data, 50, 3, []int{50, 50, 50}},
		{"negative segment", data[:10], -1, 8, []int{10}},
		// libudx reads into 2048-byte buffers: longer datagrams are cut.
		{"longer than libudx reads", big, 0, 8, []int{2048}},
		{"coalesced, longer than libudx reads", big[:6500], 3000, 8, []int{2048, 2048, 500}},
	} {
		dst := make([]rxMsg, tc.room)
		n := splitGRO(dst, tc.b, tc.seg, from)
		if n != len(tc.want) {
			t.Errorf("%s: %d datagrams, want %d", tc.name, n, len(tc.want))
			continue
		}
		seg := tc.seg
		if seg <= 0 || seg > len(tc.b) {
			seg = len(tc.b)
		}
		for i, m := range dst[:n] {
			off := i * seg
			if m.n != tc.want[i] || len(m.buf) != m.n || m.addr != from || !bytes.Equal(m.buf, tc.b[off:off+m.n]) {
				t.Errorf("%s: datagram %d is %d bytes from %v, want %d bytes from offset %d", tc.name, i, m.n, m.addr, tc.want[i], off)
			}
		}
	}
}

// TestPoolsDoNotAllocate: taking and returning the per-packet and
// per-write buffers costs no allocation once the pools are warm.
func TestPoolsDoNotAllocate(t *testing.T) {
	if raceOn {
		t.Skip("sync.Pool drops items at random under -race")
	}
	putPktBuf(getPktBuf())
	wqPool.Put(wqPool.Get())
	if n := testing.AllocsPerRun(100, func() {
		putPktBuf(getPktBuf()[:100])
		wqPool.Put(wqPool.Get())
	}); n != 0 {
		t.Fatalf("%v allocations per get and put", n)
	}
}

// A sent packet's record is reused once acked, zeroed, and reusing it
// allocates nothing.
func TestPktRecordsReused(t *testing.T) {
	var s Stream
	p := s.newPkt()
	p.seq, p.transmits, p.lost = 7, 3, true
	s.freePkt(p)
	q := s.newPkt()
	if q != p || !reflect.DeepEqual(*q, outPkt{}) {
		t.Fatalf("newPkt after freePkt: %p %+v, want %p zeroed", q, *q, p)
	}
	if n := testing.AllocsPerRun(100, func() { s.freePkt(s.newPkt()) }); n != 0 {
		t.Fatalf("%v allocations per record", n)
	}
	for range maxFreePkts + 10 {
		s.freePkt(new(outPkt))
	}
	if len(s.freePkts) != maxFreePkts {
		t.Fatalf("%d records kept, want at most %d", len(s.freePkts), maxFreePkts)
	}
}
