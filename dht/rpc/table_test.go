package rpc

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// TestTableAgainstReference fills Go and reference routing tables with the
// same ids (clustered so rows fill up) and compares closest() order, size
// and full-row events; then feeds both NAT samplers the same sequences.
func TestTableAgainstReference(t *testing.T) {
	p := nodetest.Start(t, "dhtrpc-table.js")
	rng := rand.New(rand.NewPCG(7, 9))
	rid := func() ID {
		var id ID
		for i := range id {
			id[i] = byte(rng.Uint32())
		}
		return id
	}
	for round := range 30 {
		local := rid()
		k := []int{20, 3, 5}[round%3]
		tb := newTable(local, k)
		full := 0
		tb.onFull = func(*tableNode, int) { full++ }
		var ids []string
		for i := range 150 {
			id := rid()
			if i%3 == 0 { // share a prefix with local so deep rows fill
				copy(id[:1+rng.IntN(2)], local[:])
			}
			if i%50 == 7 {
				id = local // the local id goes into row 255
			}
			tb.add(&tableNode{id: id})
			ids = append(ids, hex.EncodeToString(id[:]))
		}
		target := rid()
		if round%2 == 0 {
			copy(target[:2], local[:])
		}
		var got []string
		for _, n := range tb.closest(&target, 0) {
			got = append(got, hex.EncodeToString(n.id[:]))
		}
		fmt.Fprintf(p.Stdin(), "table %x %d %s %x\n", local[:], k, strings.Join(ids, ","), target[:])
		want := p.Expect("closest ", 10*time.Second)
		if g := fmt.Sprintf("%s %d %d", strings.Join(got, ","), tb.size, full); g != want {
			t.Fatalf("round %d:\n Go   %s\n Node %s", round, g, want)
		}
	}
	for round := range 30 {
		var s natSampler
		var in, out []string
		for range 1 + rng.IntN(40) {
			a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{1, 2, 3, byte(1 + rng.IntN(2))}), uint16(1000+rng.IntN(3)))
			if rng.IntN(3) == 0 {
				a = netip.AddrPortFrom(a.Addr(), 1000)
			}
			s.add(a)
			in = append(in, a.String())
			h := "null"
			if s.host.IsValid() {
				h = s.host.String()
			}
			out = append(out, fmt.Sprintf("%s:%d", h, s.port))
		}
		fmt.Fprintf(p.Stdin(), "nat %s\n", strings.Join(in, ","))
		if want := p.Expect("nat ", 10*time.Second); want != strings.Join(out, ",") {
			t.Fatalf("nat round %d, input %v:\n Go   %s\n Node %s", round, in, strings.Join(out, ","), want)
		}
	}
}

func TestCongestionWindow(t *testing.T) {
	c := congestion{max: 80}
	for range 80 {
		if c.full() {
			t.Fatal("full too early")
		}
		c.send()
	}
	if !c.full() {
		t.Fatal("slot of 80 not full")
	}
	c.drain()
	for range 79 {
		c.send()
	}
	if c.full() {
		t.Fatal("full at 159")
	}
	c.send()
	if !c.full() {
		t.Fatal("not full at 160")
	}
	c.recv() // takes one from the current slot
	if c.full() {
		t.Fatal("still full after a reply")
	}
	for range 4 {
		c.drain()
	}
	if c.total != 0 {
		t.Fatalf("total %d after a full rotation", c.total)
	}
}
