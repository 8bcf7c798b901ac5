package natlab

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"time"
)

// Impair is what one direction of an emulated WAN link does to packets.
// The zero value passes every packet at once. The order is: MTU check,
// loss (random, then bursty), the bottleneck queue (drop-tail) and its
// serialisation at Rate, then propagation Delay with Jitter, reordering
// and duplication.
type Impair struct {
	// Delay is the one-way propagation delay.
	Delay time.Duration
	// Jitter adds to each packet's delay a value drawn uniformly from
	// [-Jitter, +Jitter]. Packets still leave in order unless Reorder is
	// set: a packet never overtakes the one before it, so at high packet
	// rates most packets see close to Delay+Jitter (netem behaves the
	// same way).
	Jitter time.Duration
	// Loss drops each packet with this probability.
	Loss float64
	// Burst, when set, also drops packets in bursts (Gilbert–Elliott).
	Burst *GilbertElliott
	// Rate is the bottleneck's rate in bits per second of IP packets
	// (0: unlimited, no queue).
	Rate int64
	// QueueBytes is the drop-tail queue ahead of the bottleneck, in bytes.
	// When 0, QueueDelay's worth of Rate is used.
	QueueBytes int
	// QueueDelay sizes the queue in time at Rate when QueueBytes is 0;
	// 0 means 100 ms (router bufferbloat is part of the realism).
	QueueDelay time.Duration
	// Reorder holds a packet back by ReorderDelay with this probability,
	// so that the packets behind it overtake it.
	Reorder float64
	// ReorderDelay is how long a reordered packet is held back; 0 means
	// 5 ms.
	ReorderDelay time.Duration
	// Duplicate delivers a packet twice with this probability.
	Duplicate float64
	// MTU drops packets longer than this many bytes silently (a path-MTU
	// black hole, which is what a UDP protocol meets on real paths whose
	// ICMP is filtered); 0 means 1500. Valid: 1280 to 1500.
	MTU int
}

// GilbertElliott is a two-state loss model: in the Good state packets are
// lost with probability LossGood, in the Bad state with LossBad; before
// each packet the state flips Good→Bad with probability P and Bad→Good
// with probability R. The mean burst (time in Bad) is 1/R packets and the
// mean loss P/(P+R)·LossBad + R/(P+R)·LossGood.
type GilbertElliott struct {
	P, R              float64
	LossGood, LossBad float64
}

// Bursty returns a Gilbert–Elliott model that loses every packet in the
// Bad state, none in Good, with mean loss rate loss and bursts of
// meanBurst packets on average.
func Bursty(loss, meanBurst float64) *GilbertElliott {
	r := 1 / meanBurst
	return &GilbertElliott{P: loss * r / (1 - loss), R: r, LossBad: 1}
}

func (im Impair) mtu() int {
	if im.MTU == 0 {
		return 1500
	}
	return im.MTU
}

func (im Impair) queueLimit() int {
	if im.QueueBytes > 0 {
		return im.QueueBytes
	}
	d := im.QueueDelay
	if d == 0 {
		d = 100 * time.Millisecond
	}
	return int(im.Rate / 8 * int64(d) / int64(time.Second))
}

func (im Impair) validate() error {
	prob := func(name string, p float64) error {
		if p < 0 || p > 1 {
			return fmt.Errorf("natlab: %s %v not in [0, 1]", name, p)
		}
		return nil
	}
	for _, c := range []struct {
		n string
		p float64
	}{{"loss", im.Loss}, {"reorder", im.Reorder}, {"duplicate", im.Duplicate}} {
		if err := prob(c.n, c.p); err != nil {
			return err
		}
	}
	if g := im.Burst; g != nil {
		for _, c := range []struct {
			n string
			p float64
		}{{"burst P", g.P}, {"burst R", g.R}, {"burst LossGood", g.LossGood}, {"burst LossBad", g.LossBad}} {
			if err := prob(c.n, c.p); err != nil {
				return err
			}
		}
	}
	if m := im.mtu(); m < 1280 || m > 1500 {
		return fmt.Errorf("natlab: MTU %d not in [1280, 1500]", m)
	}
	if im.Delay < 0 || im.Jitter < 0 || im.Rate < 0 || im.QueueBytes < 0 || im.QueueDelay < 0 || im.ReorderDelay < 0 {
		return fmt.Errorf("natlab: negative delay, jitter, rate or queue in %+v", im)
	}
	if im.Rate > 0 && im.queueLimit() < im.mtu() {
		return fmt.Errorf("natlab: queue of %d bytes cannot hold one %d-byte packet", im.queueLimit(), im.mtu())
	}
	return nil
}

// PipeStats counts what a Pipe did to the packets pushed into it.
type PipeStats struct {
	In         uint64 // packets pushed
	Out        uint64 // packets popped, duplicates included
	Lost       uint64 // dropped by Loss or Burst
	QueueDrops uint64 // dropped because the queue was full
	MTUDrops   uint64 // dropped for being longer than the MTU
	Reordered  uint64 // held back by Reorder
	Duplicated uint64 // extra copies made
	// Sojourn is the time each queued packet waited before the
	// bottleneck started sending it (only with a Rate).
	Sojourn Histogram
}

// Pipe is one direction of an emulated link as a pure state machine: the
// caller pushes packets as they arrive and pops them when they are due,
// passing the time in; the pipe never reads the clock and starts no
// goroutine, so tests drive it with a fake clock. Not safe for concurrent
// use.
type Pipe struct {
	im        Impair
	limit     int // queue bytes
	rng       *rand.Rand
	bad       bool      // Gilbert–Elliott state
	busyUntil time.Time // when the bottleneck finishes the last queued packet
	lastOut   time.Time // latest in-order delivery scheduled
	due       pktHeap
	seq       uint64
	stats     PipeStats
}

// NewPipe returns a pipe applying im, drawing its randomness from seed.
func NewPipe(im Impair, seed uint64) (*Pipe, error) {
	if err := im.validate(); err != nil {
		return nil, err
	}
	if im.ReorderDelay == 0 {
		im.ReorderDelay = 5 * time.Millisecond
	}
	return &Pipe{im: im, limit: im.queueLimit(), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, nil
}

// Stats returns the counters so far.
func (p *Pipe) Stats() PipeStats { return p.stats }

// ResetSojourn clears the sojourn histogram, e.g. after a warm-up.
func (p *Pipe) ResetSojourn() { p.stats.Sojourn = Histogram{} }

// Push hands the pipe a packet that arrived at now. The pipe keeps pkt
// (the caller must not reuse it) until Pop returns it, or drops it.
func (p *Pipe) Push(now time.Time, pkt []byte) {
	p.stats.In++
	if len(pkt) > p.im.mtu() {
		p.stats.MTUDrops++
		return
	}
	if p.lost() {
		p.stats.Lost++
		return
	}
	depart := now
	if p.im.Rate > 0 {
		start := now
		if p.busyUntil.After(now) {
			start = p.busyUntil
		}
		wait := start.Sub(now)
		ahead := int(int64(wait) * p.im.Rate / 8 / int64(time.Second))
		if ahead+len(pkt) > p.limit {
			p.stats.QueueDrops++
			return
		}
		p.stats.Sojourn.Add(wait)
		p.busyUntil = start.Add(time.Duration(int64(len(pkt)) * 8 * int64(time.Second) / p.im.Rate))
		depart = p.busyUntil
	}
	d := p.im.Delay
	if j := p.im.Jitter; j > 0 {
		d += time.Duration(p.rng.Int64N(2*int64(j)+1)) - j
		d = max(d, 0)
	}
	at := depart.Add(d)
	if p.im.Reorder > 0 && p.rng.Float64() < p.im.Reorder {
		p.stats.Reordered++
		at = at.Add(p.im.ReorderDelay)
	} else {
		if at.Before(p.lastOut) {
			at = p.lastOut
		}
		p.lastOut = at
	}
	p.schedule(at, pkt)
	if p.im.Duplicate > 0 && p.rng.Float64() < p.im.Duplicate {
		p.stats.Duplicated++
		p.schedule(at, append([]byte(nil), pkt...))
	}
}

func (p *Pipe) lost() bool {
	if p.im.Loss > 0 && p.rng.Float64() < p.im.Loss {
		return true
	}
	g := p.im.Burst
	if g == nil {
		return false
	}
	if p.bad {
		p.bad = p.rng.Float64() >= g.R
	} else {
		p.bad = p.rng.Float64() < g.P
	}
	loss := g.LossGood
	if p.bad {
		loss = g.LossBad
	}
	return loss > 0 && p.rng.Float64() < loss
}

func (p *Pipe) schedule(at time.Time, pkt []byte) {
	p.seq++
	heap.Push(&p.due, duePkt{at: at, seq: p.seq, b: pkt})
}

// Pop returns the next packet due at now, or nil when none is.
func (p *Pipe) Pop(now time.Time) []byte {
	if len(p.due) == 0 || p.due[0].at.After(now) {
		return nil
	}
	p.stats.Out++
	return heap.Pop(&p.due).(duePkt).b
}

// Next is when the next packet is due; ok is false when the pipe is empty.
func (p *Pipe) Next() (at time.Time, ok bool) {
	if len(p.due) == 0 {
		return time.Time{}, false
	}
	return p.due[0].at, true
}

type duePkt struct {
	at  time.Time
	seq uint64
	b   []byte
}

type pktHeap []duePkt

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(duePkt)) }
func (h *pktHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = duePkt{}
	*h = old[:len(old)-1]
	return x
}

// histBucket is the Histogram's resolution; it spans histBuckets of them.
const (
	histBucket  = 100 * time.Microsecond
	histBuckets = 30000 // 3 s
)

// Histogram counts durations in 100 µs buckets up to 3 s (longer ones go
// in the last bucket).
type Histogram struct {
	n      uint64
	counts []uint64
}

// Add counts d.
func (h *Histogram) Add(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, histBuckets)
	}
	i := min(int(d/histBucket), histBuckets-1)
	h.counts[i]++
	h.n++
}

// Merge adds o's counts to h's.
func (h *Histogram) Merge(o Histogram) {
	if o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, histBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// Count is how many durations were added.
func (h *Histogram) Count() uint64 { return h.n }

// Quantile returns the upper edge of the bucket holding the q-quantile
// (0 < q <= 1), or 0 when nothing was added.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(i+1) * histBucket
		}
	}
	return histBuckets * histBucket
}
