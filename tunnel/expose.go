package tunnel

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// DefaultDetectTimeout is how long Expose waits for a peer's first bytes
// before deciding it is a raw client. A keytunnel client writes the
// preamble as soon as its Dial returns, so the preamble reaches us about one
// one-way trip after our side of the connection is up: 400 ms covers
// intercontinental and relayed paths (one-way trips of 100–250 ms) with
// room for scheduling, and is still short enough for a raw client of a
// server-speaks-first protocol (SMTP, MySQL, SSH banners are awaited for
// seconds by their clients) to see the banner only 0.4 s late.
const DefaultDetectTimeout = 400 * time.Millisecond

// detectWait is how long servePeer waits for pc's preamble: DetectTimeout,
// or on a path whose transport measures its round trip (a secret stream
// over udx) and is slow, three smoothed RTTs and 200 ms, so that a
// keytunnel client on a long, lossy or relayed path (a preamble lost once
// costs a retransmission) is not taken for a raw one and failed with "peer
// did not answer the keytunnel preamble".
func detectWait(base time.Duration, pc PeerConn) time.Duration {
	if rtt := rttOf(pc); rtt > 0 {
		return max(base, 3*rtt+200*time.Millisecond)
	}
	return base
}

// ExposeOptions tune an Exposer. The zero value is usable.
type ExposeOptions struct {
	// Allow lists the keys that may use the target given to NewExposer;
	// empty allows everyone.
	Allow AllowList
	// DetectTimeout is the wait before a silent peer is treated as raw;
	// on a path that reports a slower RTT the wait is 3 RTT + 200 ms
	// (detectWait). Zero means DefaultDetectTimeout.
	DetectTimeout time.Duration
	// DialTimeout bounds each connection to the target. Zero means 10 s.
	DialTimeout time.Duration
	// DialTarget connects to the target; nil means DialTarget (TCP, or a
	// Unix socket for unix:PATH).
	DialTarget func(ctx context.Context, addr string) (net.Conn, error)
	// Budget caps the sessions, streams and buffer memory peers may take;
	// zero fields take the defaults (see Budget).
	Budget Budget
	// UDP makes the target a UDP service (host:port): peers reach it as
	// UDP flows (see doc.go), and DialTarget, when nil, dials UDP.
	UDP bool
	// Services are further targets under the same key, each under a
	// name that clients give in their stream headers (see doc.go,
	// "Several services under one key"). The target given to NewExposer,
	// with Allow and UDP, is the default service; without one (an empty
	// target), the first of Services is. Names must be valid and distinct
	// (CheckServices). A peer session is admitted if any service's list
	// admits its key (SessionAllow); each stream is checked against its
	// own service's list.
	Services []Service
	// Flows caps and expires UDP flows; zero fields take the defaults.
	Flows   FlowOptions
	Logger  *slog.Logger
	OnEvent func(Event)
}

// Exposer serves a local TCP service to the peers of a PeerListener.
type Exposer struct {
	ln   PeerListener
	opts ExposeOptions
	// services by name; def is the default one (also under its name).
	services     map[string]*service
	def          *service
	names        []string  // the named services, in the order given
	anyUDP       bool      // some service is UDP: flows expire
	sessionAllow AllowList // the union of the services' lists
	log          *slog.Logger
	emit         emitter
	// deliver, when set, takes each tunnelled connection instead of a
	// connection to target (a Listener's Accept); false means nobody will.
	deliver func(context.Context, PeerConn) bool
	acct    *accountant
	stats   *counters
	// flows are the open UDP flows of a UDP Exposer, for the cap and
	// the idle expiry.
	flows    *flowTable[*flow]
	refusals lockedRefusalLog
	lanes    laneRegistry // mux sessions, for their interactive lanes

	serving
}

// NewExposer starts serving ln's peers, connecting each to target
// (host:port, or unix:PATH; see DialTarget). The Exposer owns ln and closes it on Close.
func NewExposer(ln PeerListener, target string, opts ExposeOptions) *Exposer {
	return newExposer(ln, target, opts, nil)
}

func newExposer(ln PeerListener, target string, opts ExposeOptions, deliver func(context.Context, PeerConn) bool) *Exposer {
	opts.DetectTimeout = orDefault(opts.DetectTimeout, DefaultDetectTimeout)
	opts.DialTimeout = orDefault(opts.DialTimeout, 10*time.Second)
	opts.Budget = opts.Budget.withDefaults()
	opts.Flows = opts.Flows.withDefaults()
	e := &Exposer{
		ln:      ln,
		opts:    opts,
		emit:    emitter(opts.OnEvent),
		deliver: deliver,
		acct:    newAccountant(opts.Budget),
		stats:   newCounters(),
		flows:   newFlowTable[*flow](opts.Flows),
	}
	e.initServices(target, opts)
	e.log = loggerOr(opts.Logger).With("key", ln.PublicKey().String(), "target", e.def.Target)
	e.init(ln)
	if e.anyUDP {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.flows.expireLoop(e.ctx)
		}()
	}
	startAccepting(&e.serving, e.log, "peer", ln.Accept, e.servePeer)
	return e
}

// Stats returns a snapshot of the Exposer's counters.
func (e *Exposer) Stats() Stats { return e.stats.snapshot() }

// Expose serves ln's peers until ctx ends or ln fails, and returns after
// every connection it started is closed.
func Expose(ctx context.Context, ln PeerListener, target string, opts ExposeOptions) error {
	return runUntil(ctx, &NewExposer(ln, target, opts).serving)
}

func (e *Exposer) servePeer(pc PeerConn) {
	defer pc.Close()
	stop := context.AfterFunc(e.ctx, func() { pc.Close() })
	defer stop()
	remote := pc.RemotePublicKey()
	log := e.log.With("remote", remote.String())

	pc.SetReadDeadline(time.Now().Add(detectWait(e.opts.DetectTimeout, pc)))
	kind, got, eof, err := detect(pc)
	if err == nil && kind == kindRaw && len(got) == 0 && !eof && e.lanes.awaits(remote) {
		// Silent, from a key whose session waits for its lane (or ended
		// just now without one): most likely that lane, its preamble
		// delayed (a first packet lost on a long path) or never to come
		// (its client exited right after dialing it). Taken for a raw
		// peer, it would be counted as a session, announced as a peer
		// and given a target connection; so it gets as long as a lane
		// may take to speak.
		pc.SetReadDeadline(time.Now().Add(laneWait))
		kind, got, eof, err = detect(pc)
	}
	pc.SetReadDeadline(time.Time{})
	if err != nil {
		log.Debug("peer failed before speaking", "err", err)
		return
	}
	if kind == kindLane {
		// A second connection of a session already admitted, from its
		// own key (serveLane checks): not a new peer.
		if err := e.serveLane(pc, log); err != nil {
			log.Debug("lane failed", "err", err)
		}
		return
	}
	mode := "raw"
	mux := kind != kindRaw // a probe gets replies as a mux client does
	switch kind {
	case kindMux, kindMux2:
		mode = "mux"
	case kindProbe:
		mode = "probe"
	}
	// mux1 and raw peers reach the default service only; a mux2 session
	// (or a probe) is for any service that admits the key, and each of
	// its streams is checked again.
	allow := e.def.Allow
	if kind == kindMux2 || kind == kindProbe {
		allow = e.sessionAllow
	}
	if !allow.Allows(remote) {
		log.Warn("refused peer: key not in allow list", "mode", mode)
		e.emit.emit(Event{Kind: EventRefused, Remote: remote, Mode: mode})
		if mux {
			refuse(pc, "key "+remote.String()+" is not in the allow list")
		}
		return
	}
	if err := e.acct.admitSession(); err != nil {
		log.Warn("refused peer: "+err.Error(), "mode", mode)
		e.emit.emit(Event{Kind: EventRefused, Remote: remote, Mode: mode, Err: err})
		if mux {
			refuse(pc, "too many peer sessions on this service; try again later")
		}
		return
	}
	defer e.acct.endSession()
	if kind == kindMux && e.def.UDP {
		// A mux1 session can only carry TCP streams.
		log.Warn("refused peer: a TCP forward reached this UDP service", "mode", mode)
		e.emit.emit(Event{Kind: EventRefused, Remote: remote, Mode: mode, Err: errWrongKind})
		refuse(pc, "this key exposes a UDP service; forward it with --udp")
		return
	}
	defer e.stats.addPeer(pc, mode)()
	e.emit.emit(Event{Kind: EventConnected, Remote: remote, Mode: mode})
	log.Info("peer connected", "mode", mode)
	if kind == kindMux || kind == kindMux2 {
		err = e.serveMux(pc, kind, log)
	} else if kind == kindProbe {
		err = e.serveProbe(pc)
	} else if e.def.UDP {
		err = e.serveRawUDP(pc, got, eof, log)
	} else if e.deliver != nil {
		err = e.deliverRaw(pc, got, eof)
	} else {
		err = e.serveRaw(pc, got, eof, log)
	}
	e.emit.emit(Event{Kind: EventDisconnected, Remote: remote, Mode: mode, Err: err})
	log.Info("peer disconnected", "mode", mode)
}

// refuse tells a keytunnel client why, then lets the reply drain: closing
// with unread bytes in the receive buffer would make TCP-like transports
// reset the connection and lose the reply.
func refuse(pc PeerConn, reason string) {
	pc.SetDeadline(time.Now().Add(2 * time.Second))
	if writeReply(pc, replyRefused, reason) != nil {
		return
	}
	pc.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(pc, 64<<10))
}

func (e *Exposer) serveRaw(pc PeerConn, got []byte, eof bool, log *slog.Logger) error {
	tc, err := e.dialTarget(e.def)
	if err != nil {
		log.Warn("cannot reach target", "err", err)
		return err
	}
	target := asConn(tc)
	if len(got) == 0 && !eof {
		// The peer was silent for the whole detection wait.
		var late peerKind
		target, got, eof, late, err = e.settleSilent(pc, target)
		if err != nil {
			tc.Close()
			return err
		}
		switch late {
		case kindMux, kindMux2:
			tc.Close()
			log.Info("late preamble: keytunnel client after all")
			return e.serveMux(pc, late, log)
		case kindProbe:
			tc.Close()
			return e.serveProbe(pc)
		case kindLane:
			tc.Close()
			return e.serveLane(pc, log)
		}
	}
	// The bytes detect consumed go to the target first; after a peer EOF
	// the replay ends in EOF too, which join passes on as CloseWrite.
	defer e.stats.connOpened()()
	return join(e.ctx, replay(pc, got, eof), target, &e.stats.received, &e.stats.sent)
}

// settleSilent decides about a peer that said nothing within the detection
// wait, now that the target is connected: whichever speaks first wins. If
// the target does, this is a raw client of a server-speaks-first protocol.
// If the peer does and its bytes are the preamble, it is a keytunnel client
// whose preamble was slow (a long path), and since nothing of the target's
// reached it yet, it can still get its mux session: the target only saw a
// connection open and close. Bytes read on either side are handed back for
// replay.
func (e *Exposer) settleSilent(pc PeerConn, tc conn) (target conn, got []byte, eof bool, late peerKind, err error) {
	type peerRes struct {
		kind peerKind
		eof  bool
		got  []byte
		err  error
	}
	type targetRes struct {
		b   []byte
		err error
	}
	pch := make(chan peerRes, 1)
	tch := make(chan targetRes, 1)
	go func() {
		kind, got, eof, err := detect(pc)
		pch <- peerRes{kind, eof, got, err}
	}()
	go func() {
		b := make([]byte, bufSize)
		n, err := tc.Read(b)
		tch <- targetRes{b[:n], err}
	}()
	var (
		p  peerRes
		tr targetRes
	)
	// The one that did not speak first is woken by a past deadline; both
	// results are needed, since it may have read something meanwhile.
	select {
	case p = <-pch:
		tc.SetDeadline(time.Now())
		tr = <-tch
	case tr = <-tch:
		pc.SetReadDeadline(time.Now())
		p = <-pch
	}
	pc.SetReadDeadline(time.Time{})
	tc.SetDeadline(time.Time{})
	if p.err != nil {
		return nil, nil, false, kindRaw, p.err
	}
	if p.kind != kindRaw {
		// Whatever the target said meanwhile never reached the peer, so
		// it can be dropped with the target connection.
		return nil, nil, false, p.kind, nil
	}
	tEOF := errors.Is(tr.err, io.EOF)
	if tr.err != nil && !tEOF && !isTimeout(tr.err) {
		return nil, nil, false, kindRaw, tr.err
	}
	return replay(tc, tr.b, tEOF), p.got, p.eof, kindRaw, nil
}

// replay returns c with got in front of what it reads, and only got if c
// has already given EOF.
func replay(c conn, got []byte, eof bool) conn {
	var r io.Reader = bytes.NewReader(got)
	if !eof {
		r = io.MultiReader(r, c)
	}
	return replayConn{conn: c, r: r}
}

type replayConn struct {
	conn
	r io.Reader
}

func (c replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (e *Exposer) serveMux(pc PeerConn, kind peerKind, log *slog.Logger) error {
	mem := e.acct.session()
	lc := newLaneConn(pc)
	lc.setHeldCharge(mem.holdFrames)
	// Runs last: once the session and its laneConn are closed.
	defer mem.releaseHeld()
	token, unregister := e.lanes.add(pc.RemotePublicKey(), lc)
	defer unregister()
	if err := writeReply(pc, replyOK, featureProbe+" "+featureLanes+"="+hex.EncodeToString(token[:])); err != nil {
		lc.Close()
		return err
	}
	sess, gate, err := newGatedMux(lc, true, serverMuxConfig(log, e.opts.Budget), mem.newSpan)
	if err != nil {
		lc.Close()
		return err
	}
	defer sess.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	var ms *muxServer
	if kind == kindMux2 {
		ms = e.newMuxServer(pc, sess, &wg, log)
	}
	var refusals refusalLog
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			// The session is over (peer gone, or our ctx closed pc).
			return nil
		}
		if err := e.acct.admitStream(mem); err != nil {
			st.Reset()
			if n, ok := refusals.due(time.Now()); ok {
				log.Warn("refused stream: "+err.Error(), "refused", n)
				e.emit.emit(Event{Kind: EventRefused, Remote: pc.RemotePublicKey(), Mode: "mux", Err: err})
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer e.acct.endStream(mem)
			if ms != nil {
				ms.serveStream(gate.stream(st))
				return
			}
			e.serveStream(gate.stream(st), pc.RemotePublicKey(), log)
		}()
	}
}

// refusalLog keeps a peer that opens streams over its cap in a loop from
// turning each reset into a log line: the first refusal is logged at once,
// later ones at most once a second, with how many were refused since.
type refusalLog struct {
	last  time.Time
	count int
}

// lockedRefusalLog is a refusalLog shared by goroutines.
type lockedRefusalLog struct {
	mu sync.Mutex
	r  refusalLog
}

func (l *lockedRefusalLog) log(log *slog.Logger, msg string) {
	l.mu.Lock()
	n, ok := l.r.due(time.Now())
	l.mu.Unlock()
	if ok {
		log.Warn(msg, "refused", n)
	}
}

func (r *refusalLog) due(now time.Time) (int, bool) {
	r.count++
	if !r.last.IsZero() && now.Sub(r.last) < time.Second {
		return 0, false
	}
	n := r.count
	r.last, r.count = now, 0
	return n, true
}

func (e *Exposer) serveStream(st muxStream, remote key.PublicKey, log *slog.Logger) {
	if e.deliver != nil {
		if !e.deliver(e.ctx, streamConn{st, remote}) {
			st.Close()
		}
		return
	}
	tc, err := e.dialTarget(e.def)
	if err != nil {
		log.Warn("cannot reach target; resetting the peer's connection", "err", err)
		// A reset, so that the client's connection fails as a TCP
		// connection to a closed port would, rather than end empty.
		st.Reset()
		return
	}
	defer e.stats.connOpened()()
	_ = join(e.ctx, st, asConn(tc), &e.stats.received, &e.stats.sent)
}

// DialTarget connects to an exposed service: addr is host:port (TCP, with
// keepalive only if the target is on another host) or unix:PATH (a Unix
// socket, for services such as Docker's or a database's that listen on
// one).
func DialTarget(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return d.DialContext(ctx, "unix", path)
	}
	d.KeepAlive = -1
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		keepAliveIfRemote(c)
	}
	return c, err
}

func (e *Exposer) dialTarget(s *service) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.DialTimeout)
	defer cancel()
	return s.dial(ctx, s.Target)
}
