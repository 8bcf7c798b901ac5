package natlab

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

var t0 = time.Unix(1000, 0)

func newPipe(t *testing.T, im Impair) *Pipe {
	t.Helper()
	p, err := NewPipe(im, 1)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pkt is an n-byte packet carrying seq in its first 4 bytes.
func pkt(seq uint32, n int) []byte {
	b := make([]byte, max(n, 4))
	binary.BigEndian.PutUint32(b, seq)
	return b
}

// drain pops everything from p, stepping the fake clock by step, and
// returns each packet's sequence number and the time it left.
func drain(p *Pipe, from time.Time, step time.Duration) (seqs []uint32, at []time.Time) {
	now := from
	for {
		next, ok := p.Next()
		if !ok {
			return
		}
		if next.After(now) {
			now = now.Add(step * ((next.Sub(now) + step - 1) / step))
		}
		for b := p.Pop(now); b != nil; b = p.Pop(now) {
			seqs = append(seqs, binary.BigEndian.Uint32(b))
			at = append(at, now)
		}
	}
}

func TestPipeDelay(t *testing.T) {
	p := newPipe(t, Impair{Delay: 30 * time.Millisecond})
	p.Push(t0, pkt(1, 100))
	if b := p.Pop(t0.Add(29 * time.Millisecond)); b != nil {
		t.Fatal("packet left before its delay")
	}
	if next, _ := p.Next(); !next.Equal(t0.Add(30 * time.Millisecond)) {
		t.Fatalf("due at %v, want +30ms", next.Sub(t0))
	}
	if b := p.Pop(t0.Add(30 * time.Millisecond)); b == nil {
		t.Fatal("packet not out after its delay")
	}
	if s := p.Stats(); s.In != 1 || s.Out != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPipeJitterInOrder(t *testing.T) {
	p := newPipe(t, Impair{Delay: 50 * time.Millisecond, Jitter: 20 * time.Millisecond})
	var minD, maxD time.Duration = time.Hour, 0
	for i := range 2000 {
		now := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		p.Push(now, pkt(uint32(i), 100))
		next, _ := p.Next()
		d := next.Sub(now)
		minD, maxD = min(minD, d), max(maxD, d)
		drain(p, now, time.Microsecond)
	}
	// One packet per 10 ms, jitter ±20 ms: clamping to order lifts some
	// delays, but the spread must show.
	if minD < 30*time.Millisecond || maxD > 70*time.Millisecond || maxD-minD < 25*time.Millisecond {
		t.Fatalf("delays %v..%v, want a spread within 30..70 ms", minD, maxD)
	}
	// Back to back, packets never overtake each other.
	for i := range 1000 {
		p.Push(t0.Add(time.Hour+time.Duration(i)*time.Microsecond), pkt(uint32(i), 100))
	}
	seqs, _ := drain(p, t0.Add(time.Hour), 100*time.Microsecond)
	for i, s := range seqs {
		if s != uint32(i) {
			t.Fatalf("packet %d left as %d-th: reordered without Reorder", s, i)
		}
	}
}

func TestPipeLoss(t *testing.T) {
	p := newPipe(t, Impair{Loss: 0.01})
	const n = 200000
	for i := range n {
		p.Push(t0, pkt(uint32(i), 64))
	}
	got := float64(p.Stats().Lost) / n
	if math.Abs(got-0.01) > 0.001 {
		t.Fatalf("loss %.4f, want 0.01", got)
	}
	if seqs, _ := drain(p, t0, time.Millisecond); len(seqs) != n-int(p.Stats().Lost) {
		t.Fatalf("%d out, want %d", len(seqs), n-int(p.Stats().Lost))
	}
}

func TestPipeGilbertElliott(t *testing.T) {
	p := newPipe(t, Impair{Burst: Bursty(0.03, 4)})
	const n = 400000
	lost, bursts, run := 0, 0, 0
	for i := range n {
		p.Push(t0, pkt(uint32(i), 64))
		if p.Stats().Lost > uint64(lost) {
			lost++
			if run == 0 {
				bursts++
			}
			run++
		} else {
			run = 0
		}
		p.Pop(t0)
	}
	rate, mean := float64(lost)/n, float64(lost)/float64(bursts)
	if math.Abs(rate-0.03) > 0.003 {
		t.Fatalf("loss %.4f, want 0.03", rate)
	}
	if mean < 3.5 || mean > 4.5 {
		t.Fatalf("mean burst %.2f packets, want 4", mean)
	}
}

func TestPipeRateAndQueue(t *testing.T) {
	// 8 Mbit/s = 1 MB/s: a 1000-byte packet takes 1 ms; 10 ms of queue.
	im := Impair{Rate: 8e6, QueueDelay: 10 * time.Millisecond, Delay: 5 * time.Millisecond}
	p := newPipe(t, im)
	for i := range 20 { // a burst: 10 fit (9 waiting + 1 sending... ) the rest drop
		p.Push(t0, pkt(uint32(i), 1000))
	}
	s := p.Stats()
	if s.QueueDrops != 10 {
		t.Fatalf("queue drops %d, want 10 (10 kB queue, 20 kB burst)", s.QueueDrops)
	}
	_, at := drain(p, t0, time.Microsecond)
	for i, a := range at {
		want := t0.Add(time.Duration(i+1)*time.Millisecond + 5*time.Millisecond)
		if !a.Equal(want) {
			t.Fatalf("packet %d left at %v, want %v", i, a.Sub(t0), want.Sub(t0))
		}
	}
	if q := s.Sojourn.Quantile(1); q != 9*time.Millisecond+histBucket {
		t.Fatalf("max sojourn %v, want 9 ms bucket", q)
	}
	// Paced at the rate, nothing queues or drops.
	p = newPipe(t, im)
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		p.Push(now, pkt(uint32(i), 1000))
		drain(p, now, time.Microsecond)
	}
	if s := p.Stats(); s.QueueDrops != 0 || s.Sojourn.Quantile(0.99) > histBucket {
		t.Fatalf("paced at the rate: %d drops, p99 sojourn %v", s.QueueDrops, s.Sojourn.Quantile(0.99))
	}
	// QueueBytes wins over QueueDelay.
	p = newPipe(t, Impair{Rate: 8e6, QueueBytes: 3000})
	for i := range 10 {
		p.Push(t0, pkt(uint32(i), 1000))
	}
	if d := p.Stats().QueueDrops; d != 7 {
		t.Fatalf("3000-byte queue: %d drops of 10, want 7", d)
	}
}

func TestPipeReorder(t *testing.T) {
	p := newPipe(t, Impair{Delay: 10 * time.Millisecond, Reorder: 0.05, ReorderDelay: 3 * time.Millisecond})
	for i := range 10000 {
		p.Push(t0.Add(time.Duration(i)*100*time.Microsecond), pkt(uint32(i), 100))
	}
	seqs, _ := drain(p, t0, 100*time.Microsecond)
	if len(seqs) != 10000 {
		t.Fatalf("%d out of 10000", len(seqs))
	}
	late := 0
	for i := 1; i < len(seqs); i++ {
		if seqs[i] < seqs[i-1] {
			late++
		}
	}
	r := p.Stats().Reordered
	if math.Abs(float64(r)/10000-0.05) > 0.01 || late == 0 || uint64(late) > r {
		t.Fatalf("reordered %d (want ~500), out of order on arrival %d", r, late)
	}
}

func TestPipeDuplicate(t *testing.T) {
	p := newPipe(t, Impair{Duplicate: 0.02})
	for i := range 50000 {
		p.Push(t0, pkt(uint32(i), 100))
	}
	seqs, _ := drain(p, t0, time.Millisecond)
	d := p.Stats().Duplicated
	if math.Abs(float64(d)/50000-0.02) > 0.003 || len(seqs) != 50000+int(d) {
		t.Fatalf("%d duplicated, %d out", d, len(seqs))
	}
}

func TestPipeMTU(t *testing.T) {
	p := newPipe(t, Impair{MTU: 1280})
	p.Push(t0, pkt(1, 1280))
	p.Push(t0, pkt(2, 1281))
	p.Push(t0, pkt(3, 1400))
	seqs, _ := drain(p, t0, time.Millisecond)
	if len(seqs) != 1 || seqs[0] != 1 || p.Stats().MTUDrops != 2 {
		t.Fatalf("out %v, MTU drops %d", seqs, p.Stats().MTUDrops)
	}
	for _, bad := range []Impair{{MTU: 1279}, {MTU: 1501}, {Loss: 1.5}, {Rate: 1000}, {Burst: &GilbertElliott{P: -1}}} {
		if _, err := NewPipe(bad, 1); err == nil {
			t.Errorf("NewPipe(%+v) accepted", bad)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 {
		t.Fatal("empty histogram has a quantile")
	}
	for i := range 100 {
		h.Add(time.Duration(i) * time.Millisecond)
	}
	if q := h.Quantile(0.95); q < 94*time.Millisecond || q > 95*time.Millisecond+histBucket {
		t.Fatalf("p95 %v", q)
	}
	h.Add(time.Hour)
	if q := h.Quantile(1); q != histBuckets*histBucket {
		t.Fatalf("max %v", q)
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, empty Histogram
	for i := range 50 {
		a.Add(time.Duration(i) * time.Millisecond)
		b.Add(time.Duration(50+i) * time.Millisecond)
	}
	empty.Merge(a)
	empty.Merge(Histogram{})
	a.Merge(b)
	if a.Count() != 100 || empty.Count() != 50 {
		t.Fatalf("counts %d, %d; want 100, 50", a.Count(), empty.Count())
	}
	if q := a.Quantile(0.95); q < 94*time.Millisecond || q > 95*time.Millisecond+histBucket {
		t.Fatalf("merged p95 %v", q)
	}
	if q := empty.Quantile(1); q != 49*time.Millisecond+histBucket {
		t.Fatalf("merged into empty: max %v", q)
	}
}
