package rpc

import (
	"context"
	"io"
	"iter"
	"net/netip"
	"sync"
	"time"
)

// QueryOptions adjusts a query. The zero value gives the reference's
// defaults.
type QueryOptions struct {
	// Concurrency is the number of requests in flight (default 10).
	Concurrency int
	// Retries per request: 0 means the default (5; 3 for DOWN_HINT),
	// negative means none.
	Retries int
	// Force sends past the congestion window, without retries.
	Force bool
	// Nodes seeds the query instead of the routing table (closestNodes).
	Nodes []netip.AddrPort
	// Replies seeds the query with the senders of earlier replies
	// (closestReplies).
	Replies []*Response
	// OnlyClosestNodes visits the seeds only, never the nodes they return.
	OnlyClosestNodes bool
	// Commit runs once for each of the k closest replies when the lookup
	// converges, concurrently. The query succeeds if one commit succeeds.
	Commit func(ctx context.Context, q *Query, r *Response) error
	// AutoCommit sends {token, target, command, value} to each closest
	// replier (the reference's commit: true).
	AutoCommit bool
}

// Query is an iterative lookup (the reference's Query stream). Replies
// with error 0 are delivered in arrival order by Next.
type Query struct {
	d        *DHT
	target   ID
	internal bool
	command  uint64
	value    []byte
	opts     QueryOptions

	// loop-owned
	k, concurrency, retries int
	force                   bool
	closest                 []*Response
	seen                    map[netip.AddrPort]*seenEntry
	pending                 []pendingNode
	inflight, slow          int
	slowdown, fromTable     bool
	committing, onlyClosest bool
	ended                   bool
	successes, errs         int
	reqs                    map[*outReq]struct{}
	background              bool
	// bootstrap: the join's query, which stops waiting for nodes that
	// missed an attempt once others have answered (see readMore).
	bootstrap    bool
	onData       func(time.Time, *Response)
	onEnd        func(time.Time, error)
	commitCtx    context.Context
	commitCancel context.CancelFunc

	mu     sync.Mutex
	out    []*Response
	notify chan struct{}
	done   chan struct{}
	err    error
	final  []*Response
	nsucc  int
	nerr   int
}

type pendingNode struct {
	id   ID
	addr netip.AddrPort
	hops int // 1 for seeds; one more than the reply that named it
}

type seenState int

const (
	seenRefs seenState = iota
	seenDone
	seenDown
)

type seenEntry struct {
	state seenState
	refs  []netip.AddrPort
}

func (d *DHT) newQuery(target ID, internal bool, command uint64, value []byte, opts *QueryOptions) *Query {
	q := &Query{d: d, target: target, internal: internal, command: command, value: value,
		notify: make(chan struct{}, 1), done: make(chan struct{})}
	if opts != nil {
		q.opts = *opts
	}
	q.k = K
	q.concurrency = q.opts.Concurrency
	if q.concurrency <= 0 {
		q.concurrency = d.cfg.Concurrency
	}
	switch {
	case q.opts.Retries < 0:
		q.retries = 0
	case q.opts.Retries > 0:
		q.retries = q.opts.Retries
	case internal && command == CmdDownHint:
		q.retries = 3
	default:
		q.retries = queryRetries
	}
	q.force = q.opts.Force
	q.seen = make(map[netip.AddrPort]*seenEntry)
	q.reqs = make(map[*outReq]struct{})
	if nodes := q.opts.Nodes; nodes != nil {
		for i := len(nodes) - 1; i >= 0; i-- {
			a := nodes[i]
			q.addPending(pendingNode{id: NodeID(a), addr: a, hops: 1}, nil)
		}
	} else if reps := q.opts.Replies; reps != nil {
		for i := len(reps) - 1; i >= 0; i-- {
			a := reps[i].From
			id := NodeID(a)
			if reps[i].FromID != nil {
				id = *reps[i].FromID
			}
			q.addPending(pendingNode{id: id, addr: a, hops: 1}, nil)
		}
	}
	q.onlyClosest = q.opts.OnlyClosestNodes
	return q
}

// start opens the query on the loop: table seeds, bootstrap seeds, first
// round of requests.
func (q *Query) start(now time.Time) {
	d := q.d
	d.queries[q] = struct{}{}
	d.stats.QueriesActive++
	d.stats.QueriesTotal++
	q.addFromTable()
	if len(q.pending) < q.k {
		for _, b := range d.liveBootstrap() {
			q.addPending(pendingNode{id: NodeID(b), addr: b, hops: 1}, nil)
		}
	}
	q.readMore(now)
}

func (q *Query) addFromTable() {
	if len(q.pending) >= q.k {
		return
	}
	q.fromTable = true
	for _, n := range q.d.tbl.closest(&q.target, q.k-len(q.pending)) {
		q.addPending(pendingNode{id: n.id, addr: n.addr, hops: 1}, nil)
	}
}

func (q *Query) isCloser(id *ID) bool {
	return len(q.closest) < q.k || compareDistance(&q.target, id, q.closest[len(q.closest)-1].FromID) < 0
}

// addPending records a node to visit; ref is the node that told us about
// it. It returns whether the node is closer than the current k-th reply.
func (q *Query) addPending(n pendingNode, ref *netip.AddrPort) bool {
	if q.onlyClosest {
		return false
	}
	e := q.seen[n.addr]
	closer := q.isCloser(&n.id)
	if e != nil {
		switch e.state {
		case seenDone:
		case seenDown:
			if ref != nil {
				q.downHint(*ref, n.addr)
			}
		default:
			if ref != nil {
				e.refs = append(e.refs, *ref)
			}
		}
		return closer
	}
	if !closer {
		return false
	}
	e = &seenEntry{}
	if ref != nil {
		e.refs = append(e.refs, *ref)
	}
	q.seen[n.addr] = e
	q.pending = append(q.pending, n)
	return true
}

func (q *Query) readMore(now time.Time) {
	if q.ended || q.committing {
		return
	}
	conc := q.concurrency
	if q.slowdown {
		conc = 3
	}
	conc += q.slow
	for q.inflight < conc && len(q.pending) > 0 {
		next := q.pending[len(q.pending)-1]
		q.pending = q.pending[:len(q.pending)-1]
		if !q.isCloser(&next.id) {
			continue
		}
		q.visit(now, next)
		if q.ended {
			return
		}
	}
	if !q.fromTable && q.successes == 0 && q.errs == 0 {
		q.slowdown = true
	}
	if len(q.pending) > 0 {
		return
	}
	// Requests still in flight have all missed an attempt (slow). A query
	// with k replies need not wait for them; neither need the join's
	// query once any node answered: a dead bootstrap node would hold it
	// for every retry (~20 s, as in the reference) while the live ones
	// answered in milliseconds. Its answer, should it come, is not needed
	// to start: later queries and refreshes visit it again.
	if q.inflight == 0 || (q.slow == q.inflight && (len(q.closest) >= q.k || (q.bootstrap && q.successes > 0))) {
		if !q.fromTable && q.successes < q.k/4 {
			q.addFromTable()
			q.readMore(now)
			return
		}
		q.flush(now)
	}
}

func (q *Query) visit(now time.Time, to pendingNode) {
	q.inflight++
	d := q.d
	r := d.newReq(to.addr, nil, q.internal, q.command, &q.target, q.value)
	if r == nil {
		q.finish(now, ErrClosed)
		return
	}
	id := to.id
	r.toID = &id
	r.retries = q.retries
	if q.force {
		r.retries = 0
	}
	r.firstTimeout = d.queryFirstTimeout(to.addr)
	r.owner = q
	q.reqs[r] = struct{}{}
	slow := false
	r.onCycle = func(now time.Time) {
		slow = true
		q.slow++
		q.readMore(now)
	}
	dec := func() {
		delete(q.reqs, r)
		if slow {
			q.slow--
		}
		r.onCycle = nil
		q.inflight--
	}
	hops := to.hops
	r.onResponse = func(now time.Time, m *Response) {
		dec()
		m.Hops = hops
		q.onVisit(now, r, m)
	}
	r.onError = func(now time.Time, err error) {
		dec()
		e := q.seen[r.to]
		if err == ErrTimeout && e != nil {
			refs := e.refs
			q.seen[r.to] = &seenEntry{state: seenDown}
			for _, ref := range refs {
				q.downHint(ref, r.to)
			}
		}
		q.errs++
		q.readMore(now)
	}
	d.send(now, r, q.force)
}

func (q *Query) onVisit(now time.Time, r *outReq, m *Response) {
	q.seen[r.to] = &seenEntry{state: seenDone}
	delete(q.d.quietBoot, r.to)
	if q.committing || q.ended {
		return
	}
	if m.Error == 0 {
		q.successes++
	} else {
		q.errs++
	}
	if m.Error == 0 && m.FromID != nil && q.isCloser(m.FromID) {
		q.pushClosest(m)
	}
	d := q.d
	from := m.From
	for _, a := range m.CloserNodes {
		if !a.Addr().Is4() || a.Port() == 0 {
			continue
		}
		if d.cfg.FilterNode != nil && !d.cfg.FilterNode(a) {
			continue
		}
		id := NodeID(a)
		if id == d.tbl.id {
			continue
		}
		if !q.addPending(pendingNode{id: id, addr: a, hops: m.Hops + 1}, &from) {
			break
		}
	}
	if !q.fromTable && q.successes+q.errs >= q.concurrency {
		q.slowdown = false
	}
	if m.Error == 0 {
		if q.onData != nil {
			q.onData(now, m)
		}
		if !q.background {
			q.mu.Lock()
			q.out = append(q.out, m)
			q.mu.Unlock()
			select {
			case q.notify <- struct{}{}:
			default:
			}
		}
	}
	q.readMore(now)
}

func (q *Query) pushClosest(m *Response) {
	q.closest = append(q.closest, m)
	for i := len(q.closest) - 2; i >= 0; i-- {
		prev := q.closest[i]
		c := compareDistance(&q.target, prev.FromID, m.FromID)
		if c < 0 {
			break
		}
		if c == 0 {
			q.closest = append(q.closest[:i+1], q.closest[i+2:]...)
			break
		}
		q.closest[i+1], q.closest[i] = prev, m
	}
	if len(q.closest) > q.k {
		q.closest = q.closest[:q.k]
	}
}

func (q *Query) downHint(to, down netip.AddrPort) {
	d := q.d
	if d.cfg.DownHintsRateLimit >= 0 && d.downHintsThisTick >= d.cfg.DownHintsRateLimit {
		return
	}
	d.downHintsThisTick++
	r := d.request(d.now, to, false, true, CmdDownHint, nil, encodeAddr(down), nil, nil)
	if r != nil {
		q.reqs[r] = struct{}{}
		r.onResponse = func(time.Time, *Response) { delete(q.reqs, r) }
		r.onError = func(time.Time, error) { delete(q.reqs, r) }
	}
}

// flush ends the lookup phase: done, or commit to the closest replies.
func (q *Query) flush(now time.Time) {
	if q.committing {
		return
	}
	q.committing = true
	commit := q.opts.Commit
	if commit == nil && q.opts.AutoCommit {
		commit = autoCommit
	}
	if commit == nil {
		q.finish(now, nil)
		return
	}
	if len(q.closest) == 0 {
		q.finish(now, ErrTooFewNodes)
		return
	}
	d := q.d
	replies := append([]*Response(nil), q.closest...)
	q.commitCtx, q.commitCancel = context.WithCancel(context.Background())
	results := make(chan error, len(replies))
	for _, r := range replies {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			results <- commit(q.commitCtx, q, r)
		}()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		var last error
		ok := false
		for range replies {
			if err := <-results; err == nil {
				ok = true
			} else {
				last = err
			}
		}
		if ok {
			last = nil
		}
		d.post(func(now time.Time) { q.finish(now, last) })
	}()
}

func autoCommit(ctx context.Context, q *Query, r *Response) error {
	if r.Token == nil {
		return ErrNoToken
	}
	res, err := q.d.Request(ctx, r.From, RequestOptions{Token: r.Token, Command: q.command, Target: &q.target, Value: q.value})
	if err != nil {
		return err
	}
	return res.Err()
}

// finish ends the query on the loop and cancels its requests.
func (q *Query) finish(now time.Time, err error) {
	if q.ended {
		return
	}
	q.ended = true
	d := q.d
	delete(d.queries, q)
	d.stats.QueriesActive--
	for r := range q.reqs {
		d.cong.recv() // as Session.destroy does
		d.destroyReq(now, r, ErrDestroyed)
	}
	q.reqs = nil
	if q.commitCancel != nil {
		q.commitCancel()
	}
	q.mu.Lock()
	q.err = err
	q.final = append([]*Response(nil), q.closest...)
	q.nsucc, q.nerr = q.successes, q.errs
	q.mu.Unlock()
	close(q.done)
	if q.onEnd != nil {
		q.onEnd(now, err)
	}
}

// Next returns the next reply, or io.EOF once the query has ended and
// every reply was read, or the query's error.
func (q *Query) Next(ctx context.Context) (*Response, error) {
	for {
		q.mu.Lock()
		if len(q.out) > 0 {
			r := q.out[0]
			q.out[0] = nil
			q.out = q.out[1:]
			q.mu.Unlock()
			return r, nil
		}
		q.mu.Unlock()
		select {
		case <-q.notify:
			continue
		case <-q.done:
			q.mu.Lock()
			n := len(q.out)
			err := q.err
			q.mu.Unlock()
			if n > 0 {
				continue
			}
			if err != nil {
				return nil, err
			}
			return nil, io.EOF
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Replies iterates over the replies until the query ends. Check Err after.
func (q *Query) Replies(ctx context.Context) iter.Seq[*Response] {
	return func(yield func(*Response) bool) {
		for {
			r, err := q.Next(ctx)
			if err != nil || !yield(r) {
				return
			}
		}
	}
}

// Wait waits for the query (and its commit phase) to end.
func (q *Query) Wait(ctx context.Context) error {
	select {
	case <-q.done:
		return q.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the query has ended.
func (q *Query) Done() <-chan struct{} { return q.done }

// Err is the query's result once Done is closed.
func (q *Query) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// Closest returns the up to k closest replies with valid ids, nearest
// first, once the query has ended.
func (q *Query) Closest() []*Response {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.final
}

// Target returns the query's target.
func (q *Query) Target() ID { return q.target }

// Counts returns how many requests succeeded and failed, once ended.
func (q *Query) Counts() (successes, errors int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.nsucc, q.nerr
}

// Close cancels the query.
func (q *Query) Close() {
	q.d.post(func(now time.Time) { q.finish(now, ErrDestroyed) })
}
