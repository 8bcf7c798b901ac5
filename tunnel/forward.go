package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	// BackoffBase and BackoffMax shape the redial backoff (see backoff).
	// Zero means 500 ms and 30 s.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Flows caps and expires the flows of a UDPForwarder.
	Flows   FlowOptions
	Logger  *slog.Logger
	OnEvent func(Event)
}

func (o *ForwardOptions) defaults() {
	o.WaitTimeout = orDefault(o.WaitTimeout, 30*time.Second)
	o.DialTimeout = orDefault(o.DialTimeout, 30*time.Second)
	o.BackoffBase = orDefault(o.BackoffBase, 500*time.Millisecond)
	o.BackoffMax = orDefault(o.BackoffMax, 30*time.Second)
}

// Forwarder makes a remote peer's service reachable on a local listener.
type Forwarder struct {
	ln net.Listener
	serving
	keeper
}

// session is a mux session to the peer, with the peer connection under
// it (for its datagram channel) and, in a UDP forward, its flows.
type session struct {
	*yamux.Session
	pc    PeerConn
	flows *flowSet
}

// keeper owns the peer session of a Forwarder or UDPForwarder: it dials
// on demand, backs off between failures, and hands the live session to
// the local connections or flows that wait for it.
type keeper struct {
	s      *serving
	d      Dialer
	remote key.PublicKey
	opts   ForwardOptions
	log    *slog.Logger
	emit   emitter
	pre    string         // the preamble to send: mux1, or mux2 for UDP flows
	onUp   func(*session) // runs on each new session before it is handed out
	want   chan struct{}  // a local connection needs a session

	mu      sync.Mutex
	sess    *session
	lastErr error         // of the latest failed dial, for waiters
	changed chan struct{} // closed and replaced when sess or lastErr change
}

func (k *keeper) init(s *serving, d Dialer, remote key.PublicKey, opts ForwardOptions, log *slog.Logger, pre string) {
	*k = keeper{s: s, d: d, remote: remote, opts: opts, log: log, emit: emitter(opts.OnEvent), pre: pre,
		want: make(chan struct{}, 1), changed: make(chan struct{})}
}

// NewForwarder starts accepting on ln and tunnelling every connection to
// remote. The Forwarder owns ln and closes it on Close. It dials lazily: the
// first local connection brings the peer session up.
func NewForwarder(d Dialer, remote key.PublicKey, ln net.Listener, opts ForwardOptions) *Forwarder {
	opts.defaults()
	f := &Forwarder{ln: ln}
	f.keeper.init(&f.serving, d, remote, opts, loggerOr(opts.Logger).With("remote", remote.String(), "local", ln.Addr().String()), preamble)
	f.serving.init(ln)
	startAccepting(&f.serving, f.log, "local", ln.Accept, f.serveLocal)
	if !opts.Raw {
		f.wg.Add(1)
		go f.sessionLoop()
	}
	return f
}

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
		_ = join(f.ctx, local, pc)
		return
	}
	// Two tries: the session we get may die between the check and
	// OpenStream; the second try waits for its replacement.
	for range 2 {
		sess, err := f.session()
		if err != nil {
			if f.ctx.Err() == nil {
				f.log.Warn("dropping local connection", "client", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		st, err := sess.OpenStream(f.ctx)
		if err != nil {
			sess.Close() // make sure sessionLoop notices
			continue
		}
		if err := join(f.ctx, local, muxStream{st}); PeerReset(err) {
			f.log.Warn("the exposing side reset the connection: its target is down, or its limits refused this connection (its log says why)", "client", c.RemoteAddr().String())
		}
		return
	}
}

// dialRaw dials one raw peer connection.
func (k *keeper) dialRaw() (PeerConn, error) {
	ctx, cancel := context.WithTimeout(k.s.ctx, k.opts.DialTimeout)
	defer cancel()
	return k.d.Dial(ctx, k.remote)
}

// session returns the live peer session, waiting up to WaitTimeout for
// one. It fails at once if the latest dial was refused or reached a
// non-keytunnel peer: those do not heal within a wait, and the user should
// see why.
func (f *keeper) session() (*session, error) {
	timer := time.NewTimer(f.opts.WaitTimeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		sess, lastErr, changed := f.sess, f.lastErr, f.changed
		f.mu.Unlock()
		if sess != nil && !sess.IsClosed() {
			return sess, nil
		}
		// Asking for a session also makes sessionLoop redial (after its
		// backoff) when the last dial was refused, so that a change of the
		// peer's allow list is picked up by later connections.
		select {
		case f.want <- struct{}{}:
		default:
		}
		if lastErr != nil && (errors.Is(lastErr, ErrRefused) || errors.Is(lastErr, ErrProtocol)) {
			return nil, lastErr
		}
		select {
		case <-changed:
		case <-timer.C:
			if lastErr != nil {
				return nil, fmt.Errorf("%w (last dial: %v)", ErrWaitTimeout, lastErr)
			}
			return nil, ErrWaitTimeout
		case <-f.s.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (f *keeper) publish(sess *session, err error) {
	f.mu.Lock()
	f.sess, f.lastErr = sess, err
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// sessionLoop owns the peer session: it dials when a local connection wants
// one, backs off between failures, and notices when the session dies. Only
// demand triggers a dial, so an idle forward to a peer that went away does
// not keep dialing the DHT.
func (f *keeper) sessionLoop() {
	defer f.s.wg.Done()
	failures := 0
	var next time.Time // no dial before this
	for {
		select {
		case <-f.want:
		case <-f.s.ctx.Done():
			return
		}
		if !f.sleepUntil(next) {
			return
		}
		sess, err := f.dial()
		if err != nil {
			if f.s.ctx.Err() != nil {
				return
			}
			failures++
			delay := backoff(failures, f.opts.BackoffBase, f.opts.BackoffMax)
			next = time.Now().Add(delay)
			if errors.Is(err, ErrRefused) {
				f.log.Error("peer refused us", "err", err)
				f.emit.emit(Event{Kind: EventRefused, Remote: f.remote, Mode: "mux", Err: err})
			}
			f.log.Warn("dial failed; will redial on demand", "err", err, "attempt", failures, "delay", delay)
			f.emit.emit(Event{Kind: EventRedialing, Remote: f.remote, Mode: "mux", Attempt: failures, Delay: delay, Err: err})
			f.publish(nil, err)
			// Waiters re-announce demand after seeing the change.
			continue
		}
		up := time.Now()
		f.log.Info("peer session up", "after_failures", failures)
		f.emit.emit(Event{Kind: EventConnected, Remote: f.remote, Mode: "mux"})
		f.publish(sess, nil)
		select {
		case <-sess.CloseChan():
		case <-f.s.ctx.Done():
			sess.Close()
			f.publish(nil, ErrClosed)
			return
		}
		f.publish(nil, nil)
		f.log.Warn("peer session lost; will redial on demand", "lived", time.Since(up).Round(time.Millisecond))
		f.emit.emit(Event{Kind: EventDisconnected, Remote: f.remote, Mode: "mux"})
		// A session that stayed up for a while resets the backoff; one
		// that died at once counts as a failure, so that a peer which
		// accepts and drops us is not redialed in a tight loop.
		if time.Since(up) >= f.opts.BackoffMax {
			failures = 0
			next = time.Time{}
		} else {
			failures++
			next = time.Now().Add(backoff(failures, f.opts.BackoffBase, f.opts.BackoffMax))
		}
	}
}

func (f *keeper) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return f.s.ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-f.s.ctx.Done():
		return false
	}
}

func (f *keeper) dial() (*session, error) {
	ctx, cancel := context.WithTimeout(f.s.ctx, f.opts.DialTimeout)
	defer cancel()
	sess, err := dialSession(ctx, f.d, f.remote, f.pre, f.log)
	if err == nil && f.onUp != nil {
		f.onUp(sess)
	}
	return sess, err
}

// dialSession dials remote, exchanges the preamble pre and starts a yamux
// client on the connection.
func dialSession(ctx context.Context, d Dialer, remote key.PublicKey, pre string, log *slog.Logger) (*session, error) {
	pc, err := d.Dial(ctx, remote)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	err = clientHandshake(pc, pre, timeout)
	if !stop() || err != nil {
		pc.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	sess, err := yamux.Client(pc, muxConfig(log), clientMemory().newSpan)
	if err != nil {
		pc.Close()
		return nil, err
	}
	return &session{Session: sess, pc: pc}, nil
}
