package wire

import (
	"math/rand/v2"
	"time"
)

// sweeper reproduces the reference caches' expiry timer without reading a
// clock: the reference sweeps every ⌈⅔ maxAge⌉ ms on an interval started
// with the cache, and skips a tick if a size-triggered sweep happened since
// the last one. Each cache call first replays the ticks due by now.
type sweeper struct {
	tick time.Duration
	next time.Time
	gced bool
}

func newSweeper(maxAge time.Duration, now time.Time) sweeper {
	ms := (2*maxAge.Milliseconds() + 2) / 3 // Math.ceil(2/3 * maxAge)
	tick := time.Duration(ms) * time.Millisecond
	return sweeper{tick: tick, next: now.Add(tick)}
}

// due returns how many sweeps the ticks up to now cause. Three are enough
// to empty any cache, so replaying more is pointless.
func (s *sweeper) due(now time.Time) int {
	if s.tick <= 0 || now.Before(s.next) {
		return 0
	}
	ticks := int64(now.Sub(s.next)/s.tick) + 1
	s.next = s.next.Add(time.Duration(ticks) * s.tick)
	n := 0
	for i := int64(0); i < ticks && i < 3; i++ {
		if !s.gced {
			n++
		}
		s.gced = false
	}
	return n
}

// genCache is xache's two-generation map: entries set or read recently
// live in latest; a sweep turns latest into oldest and drops the old
// oldest. Reading an entry in oldest moves it back to latest, so entries in
// use survive. latest never reaches maxSize: reaching it sweeps at once,
// which bounds the cache to 2×maxSize entries.
type genCache[K comparable, V any] struct {
	maxSize        int
	sw             sweeper
	latest, oldest map[K]V
	retained       map[K]V // never swept; set does not override it
}

func newGenCache[K comparable, V any](maxSize int, maxAge time.Duration, now time.Time) *genCache[K, V] {
	return &genCache[K, V]{maxSize: maxSize, sw: newSweeper(maxAge, now), latest: map[K]V{}, oldest: map[K]V{}, retained: map[K]V{}}
}

func (c *genCache[K, V]) advance(now time.Time) {
	for range c.sw.due(now) {
		c.gc()
	}
}

// gc sweeps one generation. Only size-triggered sweeps mark the sweeper,
// so that the next timer tick is skipped as in the reference.
func (c *genCache[K, V]) gc() {
	c.oldest = c.latest
	c.latest = map[K]V{}
}

func (c *genCache[K, V]) set(k K, v V) {
	if _, ok := c.retained[k]; ok {
		return
	}
	c.putLatest(k, v)
}

// putLatest puts k in the latest generation, out of the oldest, and
// sweeps once that holds maxSize.
func (c *genCache[K, V]) putLatest(k K, v V) {
	c.latest[k] = v
	delete(c.oldest, k)
	if len(c.latest) >= c.maxSize {
		c.sw.gced = true
		c.gc()
	}
}

func (c *genCache[K, V]) retain(k K, v V) {
	c.retained[k] = v
	delete(c.latest, k)
	delete(c.oldest, k)
}

func (c *genCache[K, V]) get(k K) (V, bool) {
	if v, ok := c.latest[k]; ok {
		return v, true
	}
	if v, ok := c.oldest[k]; ok {
		// Moved back as set puts it, size check included: xache's
		// get moves it without one, so reads of old entries can grow
		// latest past maxSize, and the sweep then hands oldest all of
		// it. A peer that puts new values and reads its old ones every
		// generation would grow the cache without bound (the fuzz target
		// found 9 of a bound of 8).
		c.putLatest(k, v)
		return v, true
	}
	if v, ok := c.retained[k]; ok {
		return v, true
	}
	var zero V
	return zero, false
}

func (c *genCache[K, V]) delete(k K) {
	delete(c.latest, k)
	delete(c.oldest, k)
	delete(c.retained, k)
}

func (c *genCache[K, V]) len() int { return len(c.latest) + len(c.oldest) + len(c.retained) }

// recordSet is one generation of announce records: per topic, records
// keyed by announcer public key.
type recordSet[K, R comparable] struct {
	topics map[K]map[R][]byte
	size   int
}

func newRecordSet[K, R comparable]() recordSet[K, R] {
	return recordSet[K, R]{topics: map[K]map[R][]byte{}}
}

// add stores the record unless one from the same announcer is already
// there, in which case the old one is kept, as record-cache does.
func (s *recordSet[K, R]) add(topic K, id R, rec []byte) bool {
	m := s.topics[topic]
	if m == nil {
		m = map[R][]byte{}
		s.topics[topic] = m
	}
	if _, ok := m[id]; ok {
		return false
	}
	m[id] = rec
	s.size++
	return true
}

func (s *recordSet[K, R]) remove(topic K, id R) {
	m := s.topics[topic]
	if _, ok := m[id]; !ok {
		return
	}
	delete(m, id)
	s.size--
	if len(m) == 0 {
		delete(s.topics, topic)
	}
}

// recordCache is record-cache: fresh and stale generations of announce
// records. Re-announcing moves a record from stale to fresh; a sweep
// drops stale and makes fresh stale. Adding the (maxSize+1)th fresh record
// sweeps, so both together hold at most 2·maxSize+1 records.
type recordCache[K, R comparable] struct {
	maxSize      int
	sw           sweeper
	fresh, stale recordSet[K, R]
}

func newRecordCache[K, R comparable](maxSize int, maxAge time.Duration, now time.Time) *recordCache[K, R] {
	return &recordCache[K, R]{maxSize: maxSize, sw: newSweeper(maxAge, now), fresh: newRecordSet[K, R](), stale: newRecordSet[K, R]()}
}

func (c *recordCache[K, R]) advance(now time.Time) {
	for range c.sw.due(now) {
		c.gc()
	}
}

func (c *recordCache[K, R]) gc() {
	c.stale = c.fresh
	c.fresh = newRecordSet[K, R]()
}

func (c *recordCache[K, R]) add(topic K, id R, rec []byte) {
	c.stale.remove(topic, id)
	if c.fresh.add(topic, id, rec) && c.fresh.size > c.maxSize {
		c.sw.gced = true
		c.gc()
	}
}

func (c *recordCache[K, R]) remove(topic K, id R) {
	c.fresh.remove(topic, id)
	c.stale.remove(topic, id)
}

// get returns up to n records of topic, chosen at random across both
// generations, in random order (the reference samples uniformly too, so
// every announcer gets a fair share of lookups when there are many).
func (c *recordCache[K, R]) get(topic K, n int) [][]byte {
	a, b := c.fresh.topics[topic], c.stale.topics[topic]
	all := make([][]byte, 0, len(a)+len(b))
	for _, r := range a {
		all = append(all, r)
	}
	for _, r := range b {
		all = append(all, r)
	}
	if n > len(all) {
		n = len(all)
	}
	for i := range n {
		j := i + rand.IntN(len(all)-i)
		all[i], all[j] = all[j], all[i]
	}
	return all[:n]
}

func (c *recordCache[K, R]) len() int { return c.fresh.size + c.stale.size }
