package rpc

import (
	"net"
	"net/netip"
	"time"
)

// outReq is an outgoing request in flight (the reference's io Request).
type outReq struct {
	tid      uint16
	to       netip.AddrPort
	toID     *ID // set when the destination is a table node; a timeout removes it
	token    *[32]byte
	internal bool
	command  uint64
	target   *ID
	value    []byte

	sock    int
	buf     []byte
	sent    int
	retries int
	timeout time.Duration // per attempt; 0 = 1 s
	// firstTimeout, waited: RequestOptions.FirstTimeout's backoff, and
	// the attempts' timeouts so far.
	firstTimeout, waited time.Duration
	firstSent            time.Time
	timer                *timer
	destroyed            bool
	queued               bool

	onResponse func(now time.Time, res *Response)
	onError    func(now time.Time, err error)
	onCycle    func(now time.Time) // query hook; nil once used
	owner      *Query
}

// Response is a reply to one of our requests.
type Response struct {
	From   netip.AddrPort
	FromID *ID // the responder's id when it sent one matching its address
	// To is our address as the responder saw it.
	To          netip.AddrPort
	TID         uint16
	Token       *[32]byte
	CloserNodes []netip.AddrPort
	Error       uint64
	Value       []byte
	RTT         time.Duration
	// Sent is how many times the request went out: RTT spans the
	// retries, and is one round trip (an upper bound: it also holds any
	// wait for the congestion window) only when Sent is 1 (RoundTrip).
	Sent int
	// Hops is, for a query's reply, how many requests deep the responder
	// was found: 1 for the nodes the query started from.
	Hops int
}

// RoundTrip is RTT when it is one round trip (the request went out
// once), else 0.
func (r *Response) RoundTrip() time.Duration {
	if r.Sent != 1 {
		return 0
	}
	return r.RTT
}

// Err returns a *RemoteError for a non-zero error code, else nil.
func (r *Response) Err() error {
	if r.Error == 0 {
		return nil
	}
	return &RemoteError{Code: r.Error}
}

// expectedSock is the socket requests go out on and samples count from.
func (d *DHT) expectedSock() int {
	if d.firewalled {
		return sockClient
	}
	return sockServer
}

func (d *DHT) nextTID() (uint16, bool) {
	for range 65536 {
		t := d.tid
		d.tid++
		if _, busy := d.inflight[t]; !busy {
			return t, true
		}
	}
	return 0, false
}

// newReq creates a request and registers it in flight (io.createRequest).
func (d *DHT) newReq(to netip.AddrPort, token *[32]byte, internal bool, command uint64, target *ID, value []byte) *outReq {
	if d.closedLoop {
		return nil
	}
	tid, ok := d.nextTID()
	if !ok {
		return nil
	}
	r := &outReq{
		tid: tid, to: to, token: token, internal: internal, command: command, target: target, value: value,
		sock: d.expectedSock(), retries: defaultRetries,
	}
	d.inflight[tid] = r
	d.stats.Requests++
	return r
}

// send transmits r unless the congestion window is full, in which case it
// is queued for the next drain. force bypasses the window.
func (d *DHT) send(now time.Time, r *outReq, force bool) {
	if r.destroyed {
		return
	}
	if r.buf == nil {
		r.buf = d.encodeRequest(r, r.token, r.value, r.to, r.sock)
		r.firstSent = now
	}
	if !force && d.cong.full() {
		if !r.queued {
			r.queued = true
			d.pending = append(d.pending, r)
		}
		return
	}
	d.sendNow(now, r)
}

func (d *DHT) sendNow(now time.Time, r *outReq) {
	r.queued = false
	if r.destroyed {
		return
	}
	r.sent++
	d.cong.send()
	d.write(r.sock, r.buf, r.to)
	d.tm.stop(r.timer)
	to := r.attemptTimeout()
	r.waited += to
	r.timer = d.tm.after(now, to, func(now time.Time) { d.cycle(now, r) })
}

// maxRTTs bounds DHT.rtts; when full it starts again (the nodes a lookup
// visits answer again soon enough).
const maxRTTs = 4096

// noteRTT keeps a node's last round trip.
func (d *DHT) noteRTT(a netip.AddrPort, rtt time.Duration) {
	if len(d.rtts) >= maxRTTs {
		clear(d.rtts)
	}
	d.rtts[a] = rtt
	if d.rttAll == 0 {
		d.rttAll = rtt
	} else {
		d.rttAll = (7*d.rttAll + rtt) / 8
	}
}

// FirstTimeoutFor is RequestOptions.FirstTimeout for a request to a
// node rtt away: four of its round trips, at least 150 ms; 0 (dht-rpc's
// 1 s) when rtt is unknown (0). Four round trips also cover a request the
// node forwards (PEER_HANDSHAKE) to a server up to three times farther
// from it than we are. A retry that comes early costs one more request,
// answered as the first (a server answers a repeated handshake from its
// slot, as the reference's does); later retries back off to 1 s.
func FirstTimeoutFor(rtt time.Duration) time.Duration {
	if rtt <= 0 {
		return 0
	}
	return max(4*rtt, 150*time.Millisecond)
}

// queryFirstTimeout is FirstTimeout for a query's request to a: for its
// last round trip, or the nodes' smoothed one for a node not heard from
// yet. A lookup's first requests go out together, and a burst of loss
// takes them together: with dht-rpc's fixed second every such dial
// waited one.
func (d *DHT) queryFirstTimeout(a netip.AddrPort) time.Duration {
	rtt, ok := d.rtts[a]
	if !ok {
		rtt = d.rttAll
	}
	return FirstTimeoutFor(rtt)
}

// baseTimeout is the request's per-attempt timeout.
func (r *outReq) baseTimeout() time.Duration {
	if r.timeout > 0 {
		return r.timeout
	}
	return attemptTimeout
}

// backoff: the request's attempts start at firstTimeout and double
// (RequestOptions.FirstTimeout); a request sent once waits its plain
// timeout.
func (r *outReq) backoff() bool {
	return r.firstTimeout > 0 && r.firstTimeout < r.baseTimeout() && r.retries > 0
}

// attemptTimeout is the timeout of the attempt just sent (r.sent-th).
func (r *outReq) attemptTimeout() time.Duration {
	base := r.baseTimeout()
	if !r.backoff() {
		return base
	}
	to := r.firstTimeout
	for i := 1; i < r.sent && to < base; i++ {
		to *= 2
	}
	return min(to, base)
}

// spent: no attempt is left.
func (r *outReq) spent() bool {
	if r.backoff() {
		return r.waited >= time.Duration(r.retries+1)*r.baseTimeout()
	}
	return r.sent > r.retries
}

// cycle runs when an attempt times out: retry, or fail with ErrTimeout.
func (d *DHT) cycle(now time.Time, r *outReq) {
	r.timer = nil
	if r.onCycle != nil {
		f := r.onCycle
		r.onCycle = nil
		f(now)
	}
	if r.destroyed {
		return
	}
	if r.spent() {
		d.stats.Timeouts++
		d.destroyReq(now, r, ErrTimeout)
		if r.toID != nil {
			if n := d.tbl.get(r.toID); n != nil {
				d.removeNode(n)
			}
		}
		return
	}
	d.stats.Retries++
	d.send(now, r, false)
}

// destroyReq cancels r and reports err to its owner.
func (d *DHT) destroyReq(now time.Time, r *outReq, err error) {
	if r.destroyed {
		return
	}
	r.destroyed = true
	d.tm.stop(r.timer)
	r.timer = nil
	if d.inflight[r.tid] != r {
		return
	}
	delete(d.inflight, r.tid)
	d.cong.recv()
	if r.onError != nil {
		r.onError(now, err)
	}
}

func (d *DHT) write(sock int, b []byte, to netip.AddrPort) {
	if _, err := d.conns[sock].WriteTo(b, net.UDPAddrFromAddrPort(to)); err != nil {
		d.log.Debug("dht-rpc send", "to", to, "err", err)
	}
}

// sendsID reports whether messages on sock carry our id.
func (d *DHT) sendsID(sock int) bool {
	return !d.ephemeral && (sock == sockServer || d.same)
}

func (d *DHT) encodeRequest(r *outReq, token *[32]byte, value []byte, to netip.AddrPort, sock int) []byte {
	m := RequestMessage{TID: r.tid, To: to, Token: token, Internal: r.internal, Command: r.command, Target: r.target, Value: value}
	if d.sendsID(sock) {
		id := d.tbl.id
		m.ID = &id
	}
	return AppendRequest(make([]byte, 0, 64+len(value)), &m)
}

// drain rotates the congestion window and token secrets and sends queued
// requests (io._drain), every 750 ms.
func (d *DHT) drain(now time.Time) {
	if d.rotate--; d.rotate == 0 {
		d.rotate = 10
		d.secrets.rotate()
		d.limiter.Sweep(now)
	}
	d.cong.drain()
	for len(d.pending) > 0 && !d.cong.full() {
		r := d.pending[0]
		d.pending[0] = nil
		d.pending = d.pending[1:]
		d.sendNow(now, r)
	}
	if len(d.pending) == 0 {
		d.pending = nil
	}
}

func (d *DHT) scheduleDrain(now time.Time) {
	d.tm.after(now, d.cfg.drainInterval, func(now time.Time) {
		d.drain(now)
		d.scheduleDrain(now)
	})
}

func (d *DHT) validID(id *ID, from netip.AddrPort) *ID {
	if id == nil {
		return nil
	}
	if NodeID(from) != *id {
		return nil
	}
	return id
}

// onMessage handles one datagram (io.onmessage).
func (d *DHT) onMessage(now time.Time, dg datagram) {
	if len(dg.b) < 2 || d.closedLoop {
		return
	}
	if d.fwWatch != nil && (dg.sock == sockServer || d.same) {
		d.fwWatch[dg.from.Addr()] = struct{}{}
	}
	external := dg.sock != d.expectedSock() && !d.same
	switch dg.b[0] {
	case typeRequest:
		if !d.limiter.Allow(now, dg.from) {
			return
		}
		m, err := DecodeRequest(dg.b)
		if err != nil {
			d.stats.Malformed++
			return
		}
		req := &Request{d: d, sock: dg.sock, TID: m.TID, From: dg.from, FromID: d.validID(m.ID, dg.from), To: m.To,
			Token: m.Token, Internal: m.Internal, Command: m.Command, Target: m.Target, Value: m.Value}
		if m.Token != nil && !d.secrets.valid(dg.from.Addr(), m.Token, d.random) {
			d.sendReply(req, CodeInvalidToken, nil, true, true, dg.from, dg.sock)
			return
		}
		d.onRequest(now, req, external)
	case typeReply:
		m, err := DecodeResponse(dg.b)
		if err != nil {
			d.stats.Malformed++
			return
		}
		r := d.inflight[m.TID]
		if r == nil {
			return
		}
		delete(d.inflight, m.TID)
		d.tm.stop(r.timer)
		r.timer = nil
		r.destroyed = true // no longer in flight
		d.cong.recv()
		d.stats.Responses++
		res := &Response{From: dg.from, FromID: d.validID(m.ID, dg.from), To: m.To, TID: m.TID, Token: m.Token,
			CloserNodes: m.CloserNodes, Error: m.Error, Value: m.Value, RTT: now.Sub(r.firstSent), Sent: r.sent}
		if rtt := res.RoundTrip(); rtt > 0 {
			d.noteRTT(res.From, rtt)
		}
		d.addNodeFromNetwork(!external, res.From, res.FromID, res.To)
		if r.onResponse != nil {
			r.onResponse(now, res)
		}
	}
}

// sendReply encodes and sends a RESPONSE (Request._sendReply).
func (d *DHT) sendReply(req *Request, code uint64, value []byte, token, closer bool, to netip.AddrPort, sock int) {
	m := ResponseMessage{TID: req.TID, To: to, Error: code, Value: value}
	if d.sendsID(sock) {
		id := d.tbl.id
		m.ID = &id
	}
	if token {
		t := d.secrets.token(to.Addr(), 1, d.random)
		m.Token = &t
	}
	if req.Target != nil && closer {
		for _, n := range d.tbl.closest(req.Target, d.tbl.k) {
			m.CloserNodes = append(m.CloserNodes, n.addr)
		}
	}
	d.write(sock, AppendResponse(make([]byte, 0, 80+len(value)+6*len(m.CloserNodes)), &m), to)
}
