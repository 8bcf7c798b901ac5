package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// A mux session's interactive lane is a second peer connection to the
// same server, dialed by the client once the session is up; laneConn
// (lanes.go) routes each stream's frames to one lane or the other. The
// server offers it in its OK reply (featureLanes=token), the client dials
// the key again and sends lanePreamble and the token, and the server joins
// that connection to the session whose token it is, if it comes from the
// same key. Until then, and for good if the second dial fails (a path the
// second connection cannot take, an older client), the session runs on its
// one connection as before.

// laneWait bounds how long a lane connection may take to send its token,
// and how long a client waits for the lane's reply.
const laneWait = 10 * time.Second

// laneDialTimeout bounds the client's second dial.
const laneDialTimeout = 30 * time.Second

type laneToken [laneTokenSize]byte

// laneDialKey marks the context of a lane's dial (IsLaneDial).
type laneDialKey struct{}

// IsLaneDial reports whether a Dialer is dialing a session's interactive
// lane, a second peer connection to a peer it already has a session with,
// rather than a new session: a Dialer that counts sessions (or tests that
// do) can tell them apart.
func IsLaneDial(ctx context.Context) bool { return ctx.Value(laneDialKey{}) != nil }

// laneRegistry holds a server's mux sessions waiting for, or holding, their
// interactive lanes, by token. A session that ended before its lane came
// stays for laneWait more, ended: a client that closes right after it
// opened (one request, then exit) may still have its lane's dial under
// way, and that connection, silent if the client went before it could
// send the preamble, must not pass for a raw peer (awaits).
type laneRegistry struct {
	mu sync.Mutex
	m  map[laneToken]*laneSession
}

type laneSession struct {
	remote key.PublicKey
	lc     *laneConn
	done   chan struct{} // closed when the session ends
	taken  bool          // a lane has been joined
	ended  time.Time     // when the session ended, if it has
}

// add registers a session of remote on lc and returns its token and the
// function that ends the registration (the session is over).
func (l *laneRegistry) add(remote key.PublicKey, lc *laneConn) (laneToken, func()) {
	var t laneToken
	rand.Read(t[:])
	ls := &laneSession{remote: remote, lc: lc, done: make(chan struct{})}
	l.mu.Lock()
	if l.m == nil {
		l.m = map[laneToken]*laneSession{}
	}
	l.pruneLocked(time.Now())
	l.m[t] = ls
	l.mu.Unlock()
	return t, func() {
		l.mu.Lock()
		if ls.taken {
			delete(l.m, t)
		} else {
			ls.ended = time.Now()
		}
		l.mu.Unlock()
		close(ls.done)
	}
}

// pruneLocked forgets sessions that ended more than laneWait ago.
func (l *laneRegistry) pruneLocked(now time.Time) {
	for t, ls := range l.m {
		if !ls.ended.IsZero() && now.Sub(ls.ended) > laneWait {
			delete(l.m, t)
		}
	}
}

// take hands out the session of token t to its own key, once.
func (l *laneRegistry) take(t laneToken, remote key.PublicKey) *laneSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.m[t]
	if ls == nil || ls.taken || ls.remote != remote || !ls.ended.IsZero() {
		return nil
	}
	ls.taken = true
	return ls
}

// awaits reports whether a session of remote waits for its lane, or
// ended within laneWait without one.
func (l *laneRegistry) awaits(remote key.PublicKey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(time.Now())
	for _, ls := range l.m {
		if ls.remote == remote && !ls.taken {
			return true
		}
	}
	return false
}

// serveLane joins pc, which sent lanePreamble, to the session whose token
// it sends next, and holds pc until that session ends (servePeer closes pc
// when this returns).
func (e *Exposer) serveLane(pc PeerConn, log *slog.Logger) error {
	var t laneToken
	pc.SetReadDeadline(time.Now().Add(laneWait))
	_, err := io.ReadFull(pc, t[:])
	pc.SetReadDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("tunnel: reading a lane's token: %w", err)
	}
	ls := e.lanes.take(t, pc.RemotePublicKey())
	if ls == nil {
		log.Debug("refused a lane: no session of this key has its token")
		refuse(pc, "no session to join this lane to; it may have ended")
		return nil
	}
	if err := writeReply(pc, replyOK, ""); err != nil {
		return err
	}
	if err := ls.lc.attach(pc); err != nil {
		return err
	}
	log.Debug("interactive lane joined")
	select {
	case <-ls.done:
	case <-e.ctx.Done():
	}
	return nil
}

// openLane dials the session's interactive lane in the background and
// joins it to lc; on any failure the session goes on without one. It ends
// when the lane is joined, the attempt fails, or the session closes.
func openLane(d Dialer, remote key.PublicKey, token string, lc *laneConn, closed <-chan struct{}, log *slog.Logger) {
	t, err := hex.DecodeString(token)
	if err != nil || len(t) != laneTokenSize {
		log.Debug("server offered a malformed lane token", "token", token)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), laneDialKey{}, true), laneDialTimeout)
	defer cancel()
	go func() {
		select {
		case <-closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	pc, err := d.Dial(ctx, remote)
	if err != nil {
		log.Debug("no interactive lane: dial failed", "err", err)
		return
	}
	// Say what this connection is before anything else, even if the
	// session has closed meanwhile: a connection closed in silence looks
	// to the server like a raw client, whose target it would connect. The
	// server refuses a token whose session is gone.
	_, err = handshakeWith(pc, lanePreamble+string(t), laneWait)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		pc.Close()
		log.Debug("no interactive lane", "err", err)
		return
	}
	if err := lc.attach(pc); err != nil {
		pc.Close()
		log.Debug("no interactive lane", "err", err)
		return
	}
	log.Debug("interactive lane joined")
}
