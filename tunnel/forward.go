package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/libp2p/go-yamux/v5"
)

// ForwardOptions tune a Forwarder and Pipe. The zero value is usable.
type ForwardOptions struct {
	// Raw speaks to the peer as hypertele does: no preamble, one peer
	// connection per local connection. For raw servers (hypertele-server,
	// holesail); a keytunnel Expose accepts both.
	Raw bool
	// WaitTimeout bounds how long a local connection waits for a peer
	// session while one is being (re)dialed. Zero means 30 s.
	WaitTimeout time.Duration
	// DialTimeout bounds one Dial, including the preamble exchange. Zero
	// means 30 s: DHT lookups and hole punching can take several seconds.
	DialTimeout time.Duration
	// BackoffBase and BackoffMax shape the redial backoff (see backoff):
	// after a failed dial, local connections that arrive within the
	// backoff fail at once with the dial's error; the first one after it
	// dials again at once. Zero means 500 ms and 5 s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Service names one of the services behind the remote key (see
	// ExposeOptions.Services); empty is its default service. A named
	// service is asked for in each stream's header (a mux2 session), so
	// only a keytunnel server that serves several services knows it. Not
	// with Raw.
	Service string
	// Flows caps and expires the flows of a UDPForwarder.
	Flows   FlowOptions
	Logger  *slog.Logger
	OnEvent func(Event)
}

func (o *ForwardOptions) defaults() {
	o.WaitTimeout = orDefault(o.WaitTimeout, 30*time.Second)
	o.DialTimeout = orDefault(o.DialTimeout, 30*time.Second)
	o.BackoffBase = orDefault(o.BackoffBase, 500*time.Millisecond)
	o.BackoffMax = orDefault(o.BackoffMax, 5*time.Second)
}

// Forwarder makes a remote peer's service reachable on a local listener.
type Forwarder struct {
	ln net.Listener
	serving
	keeper
}

// session is a mux session to the peer, with the peer connection under
// it (for its datagram channel and Stats) and, in a UDP forward, its
// flows.
type session struct {
	*yamux.Session
	pc    PeerConn
	gate  *sendGate
	lanes *laneConn // under the session; attached when the server offered a lane
	reply *replyConn
	flows *flowSet

	abandoned chan struct{} // closed by keeper.abandon
	abandon   sync.Once
}

// lastHeard is when the peer connection last received anything, where it
// can tell (a secret stream: its frames, the peer's keepalives
// included); zero where it cannot.
func (s *session) lastHeard() time.Time {
	if r, ok := s.pc.(interface{ LastReceive() time.Time }); ok {
		return r.LastReceive()
	}
	return time.Time{}
}

// quietLimit is how long a session may go without a frame from its peer
// before a new stream is not trusted to it. The peer's secret stream
// writes at least every 5 s (its keepalive, dht's connectionKeepAlive),
// so a live peer on a working path is heard well within this plus a few
// round trips.
const quietLimit = 7 * time.Second

// answers says whether sess is worth a new stream. A session that heard
// from its peer recently is, with no wait. One that has been quiet for
// longer than the peer's keepalive allows may have lost its peer without
// a word (the process killed and restarted, its host gone, a NAT mapping
// dropped); yamux's keepalive would notice that only within a minute, and
// a stream opened on it meanwhile hangs, so it is pinged first. With no
// answer within a few round trips (pingWait) the session is abandoned:
// the connection waits for a fresh dial, which reaches a restarted peer
// at once, while the old session keeps its streams until it hears from
// its peer again or times out, as it would have anyway. False also when
// the session closed or the Forwarder did.
func (k *keeper) answers(sess *session) bool {
	heard := sess.lastHeard()
	if heard.IsZero() || time.Since(heard) < quietLimit+2*rttOf(sess.pc) {
		return true
	}
	wait := pingWait(sess.pc)
	res := make(chan error, 1)
	k.s.wg.Add(1)
	go func() {
		defer k.s.wg.Done()
		_, err := sess.Ping() // joins a ping under way; returns when the session closes
		res <- err
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err := <-res:
		return err == nil
	case <-timer.C:
		if time.Since(sess.lastHeard()) < wait {
			return true // the peer spoke meanwhile: the ping is on its way back
		}
		k.abandon(sess, time.Since(heard))
		return false
	case <-k.s.ctx.Done():
		return false
	}
}

// pingWait is how long answers waits for a quiet session's ping: a few
// round trips, at least 2 s for a loaded host and at most 5 s.
func pingWait(pc PeerConn) time.Duration {
	return min(max(4*rttOf(pc)+500*time.Millisecond, 2*time.Second), 5*time.Second)
}

// rttOf is pc's smoothed round-trip time where its transport measures one
// (a secret stream over udx), else 0.
func rttOf(pc PeerConn) time.Duration {
	if r, ok := pc.(interface{ RTT() time.Duration }); ok {
		return r.RTT()
	}
	return 0
}

// replyErr is why the server did not accept the session (ErrRefused,
// ErrProtocol), once its reply is known to say so; nil before that.
func (s *session) replyErr() error {
	select {
	case <-s.reply.done:
		return s.reply.err
	default:
		return nil
	}
}

func (s *session) isAbandoned() bool {
	select {
	case <-s.abandoned:
		return true
	default:
		return false
	}
}

// abandon makes sessionLoop give sess up (once) as if it had closed,
// without closing it: a peer that comes back to it still finds its
// streams there.
func (k *keeper) abandon(sess *session, quiet time.Duration) {
	sess.abandon.Do(func() {
		k.log.Warn("the peer has gone quiet; dialing it again for new connections (the open ones keep the old session until it answers or times out)",
			"quiet", quiet.Round(time.Millisecond))
		close(sess.abandoned)
	})
}

// keeper owns the peer session of a Forwarder or UDPForwarder: it dials
// on demand, backs off between failures, fails waiters at once when the
// peer is known to be unreachable, hands the live session to the local
// connections or flows that wait for it, and keeps the tunnel's Stats.
type keeper struct {
	s      *serving
	d      Dialer
	remote key.PublicKey
	opts   ForwardOptions
	log    *slog.Logger
	emit   emitter
	stats  *counters
	pre    string         // the preamble to send: mux1, or mux2 for UDP flows
	onUp   func(*session) // runs on each new session before it is handed out
	want   chan struct{}  // a local connection needs a session

	mu      sync.Mutex
	sess    *session
	lastErr error         // of the latest failed dial, for waiters
	failAt  time.Time     // when that dial failed
	failed  int           // dials failed in a row
	next    time.Time     // no dial before this (the backoff)
	dials   int           // dials finished, so that a waiter knows its dial ended
	dialing bool          // a dial is under way
	changed chan struct{} // closed and replaced when any of the above change
}

func (k *keeper) init(s *serving, d Dialer, remote key.PublicKey, opts ForwardOptions, log *slog.Logger, pre string) {
	*k = keeper{s: s, d: d, remote: remote, opts: opts, log: log, emit: emitter(opts.OnEvent), stats: newCounters(),
		pre: pre, want: make(chan struct{}, 1), changed: make(chan struct{})}
}

// NewForwarder starts accepting on ln and tunnelling every connection to
// remote. The Forwarder owns ln and closes it on Close. It dials lazily: the
// first local connection brings the peer session up.
func NewForwarder(d Dialer, remote key.PublicKey, ln net.Listener, opts ForwardOptions) *Forwarder {
	opts.defaults()
	f := &Forwarder{ln: ln}
	log := loggerOr(opts.Logger).With("remote", remote.String(), "local", ln.Addr().String())
	pre := preamble
	if opts.Service != "" {
		log = log.With("service", opts.Service)
		pre = preamble2
	}
	f.keeper.init(&f.serving, d, remote, opts, log, pre)
	f.serving.init(ln)
	startAccepting(&f.serving, f.log, "local", ln.Accept, f.serveLocal)
	if !opts.Raw {
		f.wg.Add(1)
		go f.sessionLoop()
	}
	return f
}

// Stats returns a snapshot of the tunnel's counters.
func (k *keeper) Stats() Stats { return k.stats.snapshot() }

// Forward tunnels ln's connections to remote until ctx ends or ln fails,
// and returns after every connection it started is closed.
func Forward(ctx context.Context, d Dialer, remote key.PublicKey, ln net.Listener, opts ForwardOptions) error {
	return runUntil(ctx, &NewForwarder(d, remote, ln, opts).serving)
}

func (f *Forwarder) serveLocal(c net.Conn) {
	defer c.Close()
	keepAliveIfRemote(c)
	local := asConn(c)
	if f.opts.Raw {
		pc, err := f.dialRaw()
		if err != nil {
			f.log.Warn("dropping local connection: dial failed", "client", c.RemoteAddr().String(), "err", err)
			return
		}
		defer f.stats.addPeer(pc, "raw")()
		defer f.stats.connOpened()()
		_ = join(f.ctx, local, pc, &f.stats.sent, &f.stats.received)
		return
	}
	// Two tries: the session we get may die between the check and
	// OpenStream; the second try waits for its replacement.
	for range 2 {
		sess, err := f.session()
		if err != nil {
			switch {
			case f.ctx.Err() != nil:
			case errors.Is(err, ErrUnreachable):
				f.log.Warn("dropping local connection: "+unreachableAdvice, "client", c.RemoteAddr().String(), "err", err)
			default:
				f.log.Warn("dropping local connection", "client", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		if !f.answers(sess) {
			continue // abandoned, or closed: the next try waits for a new session
		}
		st, err := sess.OpenStream(f.ctx)
		if err != nil {
			sess.Close() // make sure sessionLoop notices
			continue
		}
		peer, err := f.streamTo(sess.gate.stream(st))
		if err != nil {
			st.Reset()
			sess.Close() // the header did not go out: the session is broken
			continue
		}
		closed := f.stats.connOpened()
		err = join(f.ctx, local, peer, &f.stats.sent, &f.stats.received)
		closed()
		if rerr := sess.replyErr(); rerr != nil {
			// The session was handed out before its reply, which refused
			// it: this connection's bytes went nowhere.
			f.log.Warn("dropping local connection", "client", c.RemoteAddr().String(), "err", rerr)
			return
		}
		if ss, ok := peer.(*serviceStream); ok && ss.refused != nil {
			f.log.Warn("connection refused by the peer: "+strings.TrimPrefix(ss.refused.Error(), ErrRefused.Error()+": "), "client", c.RemoteAddr().String())
			f.emit.emit(Event{Kind: EventRefused, Remote: f.remote, Mode: "mux", Service: f.opts.Service, Err: ss.refused})
			return
		}
		if PeerReset(err) {
			f.log.Warn("the exposing side reset the connection: its target is down, or its limits refused this connection (its log says why)", "client", c.RemoteAddr().String())
		}
		return
	}
}

// streamTo makes st a connection to the forward's service: st itself for
// the default service of a mux1 session, else a stream that names it.
func (k *keeper) streamTo(st muxStream) (conn, error) {
	if k.opts.Service == "" {
		return st, nil
	}
	return openServiceStream(st, k.opts.Service)
}

// unreachableAdvice follows a dropped connection's or flow's reason when
// the peer is known to be unreachable.
const unreachableAdvice = "cannot reach the peer; check that its expose runs (keytunnel doctor KEY tests the path)"

// dialRaw dials one raw peer connection.
func (k *keeper) dialRaw() (PeerConn, error) {
	ctx, cancel := context.WithTimeout(k.s.ctx, k.opts.DialTimeout)
	defer cancel()
	return k.d.Dial(ctx, k.remote)
}

// session returns the live peer session, or why there is none. When no
// session is up a local connection makes sessionLoop dial at once and
// waits for that dial (up to WaitTimeout). Once the peer is known to be
// unreachable (knownUnreachable) it never waits out a backoff: the
// connections waiting for the dial that showed it fail with its error, and
// so do those that arrive during the backoff after it. Refusals and
// non-keytunnel peers fail at once as well: they do not heal within a
// wait, and the user should see why.
func (k *keeper) session() (*session, error) {
	timer := time.NewTimer(k.opts.WaitTimeout)
	defer timer.Stop()
	k.mu.Lock()
	start := k.dials
	k.mu.Unlock()
	for {
		k.mu.Lock()
		sess, lastErr, changed := k.sess, k.lastErr, k.changed
		dialing, ended, failAt, next := k.dialing, k.dials > start, k.failAt, k.next
		known := knownUnreachable(lastErr, k.failed)
		k.mu.Unlock()
		if sess != nil && !sess.IsClosed() && !sess.isAbandoned() {
			return sess, nil
		}
		if !dialing {
			wait := time.Until(next)
			switch {
			case lastErr != nil && (errors.Is(lastErr, ErrRefused) || errors.Is(lastErr, ErrProtocol)):
				k.wantDial() // a changed allow list is seen by later connections
				return nil, lastErr
			case known && ended:
				return nil, unreachable(lastErr)
			case known && wait > 0:
				return nil, fmt.Errorf("%w (a dial %v ago failed: %w; next dial in %v)", ErrUnreachable,
					time.Since(failAt).Round(100*time.Millisecond), lastErr, wait.Round(100*time.Millisecond))
			}
			k.wantDial()
		}
		select {
		case <-changed:
		case <-timer.C:
			if lastErr != nil {
				return nil, fmt.Errorf("%w (last dial: %v)", ErrWaitTimeout, lastErr)
			}
			return nil, ErrWaitTimeout
		case <-k.s.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// knownUnreachable says whether a peer whose latest dial failed with err,
// the failed-th failure in a row, is known to be unreachable, so that
// local connections fail rather than wait: the Dialer said so
// (ErrUnreachable: the peer is not announced, say), or two dials in a row
// failed. One other failure may be transient (a lost packet, a loaded
// host), and the connections waiting for it wait for one more dial.
func knownUnreachable(err error, failed int) bool {
	return err != nil && (errors.Is(err, ErrUnreachable) || failed >= 2)
}

func unreachable(err error) error {
	if errors.Is(err, ErrUnreachable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// wantDial asks sessionLoop for a session.
func (k *keeper) wantDial() {
	select {
	case k.want <- struct{}{}:
	default:
	}
}

// update changes the published state under k.mu and wakes the waiters.
func (k *keeper) update(change func()) {
	k.mu.Lock()
	change()
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

func (k *keeper) publish(sess *session, err error) {
	k.update(func() { k.sess, k.lastErr = sess, err })
}

// sessionLoop owns the peer session: it dials when a local connection wants
// one, unless the backoff after a failed dial runs (session then fails the
// connection at once), and notices when the session dies. Only demand
// triggers a dial, so an idle forward to a peer that went away does not
// keep dialing the DHT, and a peer that comes back is reached by the first
// local connection after the backoff, without waiting for a timer.
func (k *keeper) sessionLoop() {
	defer k.s.wg.Done()
	failures := 0      // for the backoff: failed dials and sessions that died at once
	failedDials := 0   // in a row, for knownUnreachable
	var hold time.Time // after a session that died at once: no dial before this
	dialed := false    // once: later dials count as redials
	for {
		select {
		case <-k.want:
		case <-k.s.ctx.Done():
			return
		}
		k.mu.Lock()
		next := k.next
		early := time.Now().Before(next) && knownUnreachable(k.lastErr, k.failed)
		k.mu.Unlock()
		if early {
			continue // the connection that asked failed at once
		}
		// Connections wait out a backoff (or hold) that is no sign the
		// peer is unreachable: they see dialing.
		k.update(func() { k.dialing = true })
		if !k.sleepUntil(next) || !k.sleepUntil(hold) {
			return
		}
		if dialed {
			k.stats.redials.Add(1)
		}
		dialed = true
		sess, err := k.dial(failures)
		if err == nil {
			// Hand the session out before the server's reply: the
			// connections waiting for it send their first bytes behind
			// the preamble, a round trip earlier. Those that a refusal
			// fails see why (session.replyErr).
			k.update(func() { k.sess = sess })
			select {
			case <-sess.reply.done:
				err = sess.reply.err
			case <-k.s.ctx.Done():
				sess.Close()
				k.publish(nil, ErrClosed)
				return
			}
			if err != nil {
				sess.Close()
			}
		}
		if err != nil {
			if k.s.ctx.Err() != nil {
				return
			}
			failures++
			failedDials++
			delay := backoff(failures, k.opts.BackoffBase, k.opts.BackoffMax)
			if errors.Is(err, ErrRefused) {
				k.log.Error("peer refused us", "err", err)
				k.emit.emit(Event{Kind: EventRefused, Remote: k.remote, Mode: "mux", Err: err})
			}
			k.log.Warn("cannot reach the peer; the next local connection dials again", "err", err, "attempt", failures, "not_before", delay.Round(time.Millisecond))
			k.emit.emit(Event{Kind: EventRedialing, Remote: k.remote, Mode: "mux", Attempt: failures, Delay: delay, Err: err})
			now := time.Now()
			k.update(func() {
				k.sess, k.lastErr, k.failAt, k.next = nil, err, now, now.Add(delay)
				k.failed = failedDials
				k.dials++
				k.dialing = false
			})
			continue
		}
		up := time.Now()
		failedDials = 0
		gone := k.stats.addPeer(sess.pc, "mux")
		k.update(func() {
			k.sess, k.lastErr, k.failed = sess, nil, 0
			k.dials++
			k.dialing = false
		})
		select {
		case <-sess.CloseChan():
		case <-sess.abandoned:
			// It closes itself when its peer stays silent (yamux's
			// keepalive), or with the Forwarder.
			k.s.wg.Add(1)
			go func() {
				defer k.s.wg.Done()
				select {
				case <-sess.CloseChan():
				case <-k.s.ctx.Done():
					sess.Close()
				}
			}()
		case <-k.s.ctx.Done():
			gone()
			sess.Close()
			k.publish(nil, ErrClosed)
			return
		}
		gone()
		if !sess.isAbandoned() {
			k.log.Warn("peer session lost; the next local connection dials again", "lived", time.Since(up).Round(time.Millisecond))
		}
		k.emit.emit(Event{Kind: EventDisconnected, Remote: k.remote, Mode: "mux"})
		// A session that stayed up for a while resets the backoff; one
		// that died at once counts as a failure, so that a peer which
		// accepts and drops us is not redialed in a tight loop.
		// Connections wait out this hold (it is no sign that the peer is
		// unreachable): they see dialing.
		if time.Since(up) >= k.opts.BackoffMax {
			failures, hold = 0, time.Time{}
		} else {
			failures++
			hold = time.Now().Add(backoff(failures, k.opts.BackoffBase, k.opts.BackoffMax))
		}
		k.publish(nil, nil)
	}
}

func (k *keeper) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return k.s.ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-k.s.ctx.Done():
		return false
	}
}

// dial starts a session (startSession: the server's reply is still to
// come); once the reply is OK, and before any of the peer's data, it says
// so (failures: the failed dials before this one).
func (k *keeper) dial(failures int) (*session, error) {
	ctx, cancel := context.WithTimeout(k.s.ctx, k.opts.DialTimeout)
	defer cancel()
	sess, err := startSession(ctx, k.d, k.remote, k.pre, k.log, func() {
		k.log.Info("peer session up", "after_failures", failures)
		k.emit.emit(Event{Kind: EventConnected, Remote: k.remote, Mode: "mux"})
	})
	if err == nil && k.onUp != nil {
		k.onUp(sess)
	}
	return sess, err
}

// dialSession dials remote, exchanges the preamble pre and starts a yamux
// client on the connection: startSession, and then the server's reply.
func dialSession(ctx context.Context, d Dialer, remote key.PublicKey, pre string, log *slog.Logger) (*session, error) {
	sess, err := startSession(ctx, d, remote, pre, log, nil)
	if err != nil {
		return nil, err
	}
	if _, err := sess.reply.result(ctx); err != nil {
		sess.Close()
		return nil, err
	}
	return sess, nil
}

// startSession dials remote, sends the preamble pre and starts a yamux
// client on the connection at once: streams opened on it go out behind
// the preamble, a round trip before the server's reply can come
// (replyConn). sess.reply says what the reply was; a session whose reply
// was not OK closes, and its reply's error is the dial's. onOK, if not
// nil, runs once the reply is OK, before anything the server sent after
// it is read.
func startSession(ctx context.Context, d Dialer, remote key.PublicKey, pre string, log *slog.Logger, onOK func()) (*session, error) {
	pc, err := d.Dial(ctx, remote)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	pc.SetWriteDeadline(deadline)
	err = writePreamble(pc, pre)
	pc.SetWriteDeadline(time.Time{})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		pc.Close()
		return nil, err
	}
	// The session starts with a laneConn whether or not the reply will
	// offer a lane: until one attaches, a laneConn sends plain yamux
	// frames, which any keytunnel server reads.
	rc := newReplyConn(pc, deadline, onOK)
	lc := newLaneConn(rc)
	sess, gate, err := newGatedMux(lc, false, clientMuxConfig(log), clientMemory().newSpan)
	if err != nil {
		lc.Close()
		return nil, err
	}
	// The goroutine ends with the session at the latest: closing it
	// cancels the lane's dial.
	go func() {
		select {
		case <-rc.done:
		case <-sess.CloseChan():
			return
		}
		if rc.err != nil {
			sess.Close()
			return
		}
		if token, ok := feature(rc.features, featureLanes); ok {
			openLane(d, remote, token, lc, sess.CloseChan(), log)
		}
	}()
	return &session{Session: sess, pc: pc, gate: gate, lanes: lc, reply: rc, abandoned: make(chan struct{})}, nil
}
