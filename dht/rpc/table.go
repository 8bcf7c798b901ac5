package rpc

import (
	"math/bits"
	"net/netip"
)

// K is the bucket size of the routing table and the width of a query.
const K = 20

// tableNode is a routing-table entry. Tick fields count maintenance ticks.
type tableNode struct {
	id        ID
	addr      netip.AddrPort
	to        netip.AddrPort // our address as this node last reported it
	sampled   int
	added     int
	pinged    int
	seen      int
	downHints int

	// time-ordered set links (oldest → latest)
	prev, next *tableNode
	inSet      bool
}

// table is kademlia-routing-table: 256 rows indexed by the first bit in
// which a node id differs from the local id; each row sorted by id bytes
// from the row's byte offset on, holding at most k nodes.
type table struct {
	id   ID
	k    int
	size int
	rows [256][]*tableNode
	// onFull is called when a node is refused because its row is full.
	onFull func(n *tableNode, row int)
}

func newTable(id ID, k int) *table { return &table{id: id, k: k} }

// diff returns the row for id: the index of the first differing bit, or
// 255 for the local id itself.
func (t *table) diff(id *ID) int {
	for i := range id {
		if x := id[i] ^ t.id[i]; x != 0 {
			return i*8 + bits.LeadingZeros8(x)
		}
	}
	return len(t.rows) - 1
}

func rowCompare(off int, a, b *ID) int {
	for i := off; i < len(a); i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// search finds id in row r: index and whether it is there.
func (t *table) search(r int, id *ID) (int, bool) {
	row := t.rows[r]
	off := r >> 3
	l, h := 0, len(row)-1
	for l <= h {
		m := (l + h) >> 1
		c := rowCompare(off, id, &row[m].id)
		if c == 0 {
			return m, true
		}
		if c < 0 {
			h = m - 1
		} else {
			l = m + 1
		}
	}
	return l, false
}

// add inserts n, or replaces the entry with the same id. It returns false
// (after calling onFull) when the row is full.
func (t *table) add(n *tableNode) bool {
	r := t.diff(&n.id)
	i, ok := t.search(r, &n.id)
	if ok {
		t.rows[r][i] = n
		return true
	}
	if len(t.rows[r]) >= t.k {
		if t.onFull != nil {
			t.onFull(n, r)
		}
		return false
	}
	row := append(t.rows[r], nil)
	copy(row[i+1:], row[i:])
	row[i] = n
	t.rows[r] = row
	t.size++
	return true
}

func (t *table) remove(id *ID) bool {
	r := t.diff(id)
	i, ok := t.search(r, id)
	if !ok {
		return false
	}
	row := t.rows[r]
	copy(row[i:], row[i+1:])
	row[len(row)-1] = nil
	t.rows[r] = row[:len(row)-1]
	t.size--
	return true
}

func (t *table) get(id *ID) *tableNode {
	r := t.diff(id)
	if i, ok := t.search(r, id); ok {
		return t.rows[r][i]
	}
	return nil
}

// closest returns up to k nodes in the reference's order: the target's
// row, then the rows below it down to 0, then the rows above it; within a
// row, id order. (Not strictly XOR order.)
func (t *table) closest(target *ID, k int) []*tableNode {
	if k <= 0 {
		k = t.k
	}
	var out []*tableNode
	d := t.diff(target)
	push := func(i int) {
		row := t.rows[i]
		n := min(k-len(out), len(row))
		out = append(out, row[:n]...)
	}
	for i := d; i >= 0 && len(out) < k; i-- {
		push(i)
	}
	for i := d + 1; i < len(t.rows) && len(out) < k; i++ {
		push(i)
	}
	return out
}

// all returns every node, in closest(local id) order.
func (t *table) all() []*tableNode { return t.closest(&t.id, 1<<30) }

// random picks a node uniformly, or nil.
func (t *table) random(n int) *tableNode {
	if t.size == 0 {
		return nil
	}
	n %= t.size
	for _, row := range t.rows {
		if n < len(row) {
			return row[n]
		}
		n -= len(row)
	}
	return nil
}

// nodeSet is time-ordered-set: nodes ordered by last touch, oldest first.
type nodeSet struct {
	oldest, latest *tableNode
	n              int
}

// add moves n to the latest end, inserting it if needed.
func (s *nodeSet) add(n *tableNode) {
	if n.inSet {
		if s.latest == n {
			return
		}
		s.unlink(n)
	}
	n.inSet = true
	n.prev, n.next = s.latest, nil
	if s.latest != nil {
		s.latest.next = n
	} else {
		s.oldest = n
	}
	s.latest = n
	s.n++
}

func (s *nodeSet) remove(n *tableNode) {
	if n.inSet {
		s.unlink(n)
		n.inSet = false
	}
}

func (s *nodeSet) unlink(n *tableNode) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		s.oldest = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		s.latest = n.prev
	}
	n.prev, n.next = nil, nil
	s.n--
}
