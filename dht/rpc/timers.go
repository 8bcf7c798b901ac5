package rpc

import (
	"container/heap"
	"time"
)

// timer is a callback the loop runs at or after a deadline.
type timer struct {
	at  time.Time
	fn  func(now time.Time)
	idx int // position in the heap; -1 when not scheduled
}

type timerHeap []*timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}

// timers is the loop's timer queue. Only the loop touches it.
type timers struct{ h timerHeap }

func (ts *timers) after(now time.Time, d time.Duration, fn func(now time.Time)) *timer {
	t := &timer{at: now.Add(d), fn: fn, idx: -1}
	heap.Push(&ts.h, t)
	return t
}

func (ts *timers) stop(t *timer) {
	if t != nil && t.idx >= 0 {
		heap.Remove(&ts.h, t.idx)
	}
}

// next returns the earliest deadline, if any.
func (ts *timers) next() (time.Time, bool) {
	if len(ts.h) == 0 {
		return time.Time{}, false
	}
	return ts.h[0].at, true
}

// fire runs every timer due at now, including ones scheduled by the
// callbacks themselves when already due.
func (ts *timers) fire(now time.Time) {
	for len(ts.h) > 0 && !ts.h[0].at.After(now) {
		t := heap.Pop(&ts.h).(*timer)
		t.fn(now)
	}
}

func (ts *timers) len() int { return len(ts.h) }
