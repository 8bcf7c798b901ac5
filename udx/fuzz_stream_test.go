package udx

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/vnet"
)

// FuzzStreamPackets feeds arbitrary packet sequences to a connected stream
// that has data in flight: no panic, and the state stays within bounds.
// Packets of odd length count as the roaming candidate's (roam.go), and
// after those whose length is a multiple of 3 everything delivered is
// authenticated: the candidate's first byte stays within what was
// delivered, and the stream moves only to the candidate.
func FuzzStreamPackets(f *testing.F) {
	for _, typ := range []uint8{0, FlagData, FlagEnd, FlagSACK, FlagMessage, FlagHeartbeat, FlagDestroy} {
		h := Header{Type: typ, ID: 1, RWnd: 1 << 20, Seq: 0, Ack: 2}
		var sk []SACKBlock
		if typ == FlagSACK {
			sk = []SACKBlock{{3, 5}}
		}
		p := AppendPacket(nil, &h, sk, []byte("abc"))
		f.Add(append([]byte{byte(len(p))}, p...))
	}
	// In-order data from the candidate (odd length), then data from the
	// current path that authenticates it (length a multiple of 3).
	c1 := AppendPacket(nil, &Header{Type: FlagData, ID: 1, RWnd: 1 << 20, Seq: 0, Ack: 0}, nil, []byte("cand!"))
	c2 := AppendPacket(nil, &Header{Type: FlagData, ID: 1, RWnd: 1 << 20, Seq: 1, Ack: 0}, nil, []byte("authd!"))
	f.Add(append(append([]byte{byte(len(c1))}, c1...), append([]byte{byte(len(c2))}, c2...)...))
	// The same, out of order.
	f.Add(append(append([]byte{byte(len(c2))}, c2...), append([]byte{byte(len(c1))}, c1...)...))
	nw := vnet.New(vnet.Config{})
	f.Cleanup(func() { nw.Close() })
	f.Fuzz(func(t *testing.T, in []byte) {
		c, _ := nw.Listen(addrZero)
		sock, err := NewSocket(c)
		if err != nil {
			t.Fatal(err)
		}
		defer sock.Close()
		st, _ := sock.NewStream(1, nil)
		st.Connect(sock, 2, netipAddr("10.9.9.9:1"))
		st.Write(make([]byte, 20000))
		time.Sleep(time.Millisecond)
		var pkts [][]byte
		for len(in) > 0 {
			n := int(in[0])
			in = in[1:]
			n = min(n, len(in))
			b := make([]byte, 0, HeaderSize+n)
			if n >= HeaderSize {
				b = append(b, in[:n]...)
			} else {
				// Short inputs become headers for our stream with that body.
				h := Header{ID: 1}
				if n > 0 {
					h.Type = in[0]
				}
				if n > 4 {
					h.Ack = binary.LittleEndian.Uint32(in[1:5])
				}
				b = AppendPacket(b, &h, nil, in[:n])
			}
			b[0], b[1] = 0xff, 1
			binary.LittleEndian.PutUint32(b[4:], 1)
			pkts = append(pkts, b)
			in = in[n:]
		}
		cand := netipAddr("10.9.9.8:2")
		st.u.do(func(now int64) error {
			st.cand, st.candU = st.peerAddr(cand)
			for _, raw := range pkts {
				if st.dead {
					break
				}
				p, _ := DecodePacket(raw, nil)
				st.fromCand = len(raw)%2 == 1 && st.cand.IsValid()
				st.onPacket(raw, &p, now)
				st.fromCand = false
				if len(raw)%3 == 0 {
					st.Authenticated(st.rxOff)
					st.service(now)
				}
				st.flush(now)
				if st.inflight.n < 0 || st.retrans.n < 0 || len(st.blocks) > maxBlocks {
					t.Fatalf("bad state")
				}
				if st.candOff > st.rxOff || (st.candOff >= 0 && !st.cand.IsValid()) {
					t.Fatalf("candidate offset %d, %d bytes delivered, candidate %v", st.candOff, st.rxOff, st.cand)
				}
				if r := st.stats.Roams; r > 1 || (r == 1 && st.raddr != cand) {
					t.Fatalf("%d roams, now at %v", r, st.raddr)
				}
			}
			return nil
		})
	})
}
