package blindrelay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/internal/admit"
	"github.com/keytunnel/keytunnel/internal/protomux"
	"github.com/keytunnel/keytunnel/udx"
)

// Streams creates the relay's raw UDX streams. *udx.UDX and *udx.Socket
// implement it. The streams must belong to the UDX instance whose socket
// the peers' connections to the relay arrive on: the peers send their
// relayed packets to that same address (hyperdht connects the raw stream on
// the relay connection's socket), and stream ids are per instance.
type Streams interface {
	NewStream(id uint32, opts *udx.StreamOptions) (*udx.Stream, error)
}

// Session admission defaults. A relay open to the internet accepts
// connections from anyone; each session holds a connection (a udx stream,
// its secret-stream and the Mux goroutines) for as long as it stays open,
// so sessions are capped in total and per source (an IPv4 address or an
// IPv6 /64, as relay/dhtrelay counts them), and a session must ask for a
// pairing soon after it opens.
const (
	// DefaultMaxSessions is 2048: one relayed connection takes a session
	// on each side, so this serves about 1024 relayed connections at once,
	// whose connection state fits a small VPS with room to spare.
	DefaultMaxSessions = 2048
	// DefaultMaxSessionsPerSource is 64: hyperdht and keytunnel open one
	// relay connection per relayed connection, so a host (or a NAT that
	// hides several) with many relayed peers needs many, while one source
	// still cannot take more than 1/32 of the default total.
	DefaultMaxSessionsPerSource = 64
	// DefaultFirstMessageTimeout is 10 s. A client sends its pair request
	// right after opening the channel (hyperdht's relayConnection and
	// keytunnel's pairThroughRelay pair as soon as the relay connection is
	// up), so it arrives one round trip after the session opens; 10 s
	// leaves room for a few udx retransmissions (1 s initial timeout,
	// doubling) on a lossy link and is below hyperdht's 15 s pairing
	// timeout, after which the client gives up anyway.
	DefaultFirstMessageTimeout = 10 * time.Second
)

// ServerOptions configure a Server. Zero values mean the defaults.
type ServerOptions struct {
	// Streams makes the relayed streams. Required.
	Streams Streams
	// MaxSessions bounds the sessions open at once; Accept refuses the
	// ones over it. Default DefaultMaxSessions.
	MaxSessions int
	// MaxSessionsPerSource bounds the sessions open at once from one
	// source (AcceptOptions.Source: an IPv4 address or an IPv6 /64);
	// Accept refuses the ones over it. Sessions with no known source
	// count only towards MaxSessions. Default DefaultMaxSessionsPerSource.
	MaxSessionsPerSource int
	// FirstMessageTimeout closes a session that has not sent a pair
	// request this long after Accept, and destroys its Mux (closing the
	// connection): a silent session would hold its connection and a
	// session slot for nothing. Default DefaultFirstMessageTimeout;
	// negative disables.
	FirstMessageTimeout time.Duration
	// MaxPending bounds the pairings waiting for their second half, over
	// all sessions. Default 4096. (The reference has no bound.)
	MaxPending int
	// MaxPendingPerSession bounds the pending requests one session may
	// hold. Default 64: hyperdht opens one relay connection per attempt and
	// pairs once on it.
	MaxPendingPerSession int
	// MaxActive bounds the matched pairs being relayed. Default 4096.
	MaxActive int
	// PendingTimeout drops a pairing whose second half has not arrived.
	// Default 30 s, twice hyperdht's 15 s client timeout.
	PendingTimeout time.Duration
	// IdleTimeout tears down a relayed pair that carried no packet in
	// either direction for this long (peers that vanished without a
	// DESTROY, or never connected). Default 2 min; negative disables.
	// hyperdht peers send a keepalive every 5 s on their streams.
	IdleTimeout time.Duration
	// OnError, when set, is told about every pair or unpair the server
	// refused or ignored for a reason other than the reference's own
	// silent rules: errors wrap ErrLimit, ErrInvalidStreamID,
	// ErrUnknownToken, ErrExpired, ErrIdle, or a udx error. It runs on a
	// protomux dispatcher or a server goroutine and must not block.
	OnError func(error)
}

// Stats are a Server's counters.
type Stats struct {
	Sessions        int    // sessions open now
	SessionsRefused uint64 // sessions Accept refused (MaxSessions, MaxSessionsPerSource)
	Silent          uint64 // sessions closed without a pair request after FirstMessageTimeout
	Pending         int    // pairings waiting for their second half now
	Active          int    // pairs being relayed now
	Requested       uint64 // pair requests that took a slot
	Matched         uint64 // pairings that got both halves and their streams
	Cancelled       uint64 // pairings ended by unpair or by their session closing
	Expired         uint64 // pending pairings dropped after PendingTimeout
	Refused         uint64 // pair requests refused (limits, bad id)
	Ignored         uint64 // pair requests for an already taken slot (as the reference)
	Idle            uint64 // pairs torn down after IdleTimeout
}

// Server is a blind relay: it pairs two pair requests that present the
// same token in opposite roles, creates two UDX streams that relay to each
// other at the UDX layer (packets are forwarded with only the stream id
// rewritten; nothing is decrypted or copied into a user buffer), and tells
// each peer which of them to connect to.
//
// Sessions are attached per connection with Accept. The server owns one
// janitor goroutine (pending expiry) and one goroutine per relayed pair
// (teardown and idle check); Close stops and waits for all of them.
type Server struct {
	opts ServerOptions

	mu       sync.Mutex
	closed   bool
	pending  map[Token]*pendingPair
	sessions map[*Session]struct{}
	sources  admit.Counter // sessions, in total and per source
	active   int
	stats    Stats

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// pendingPair is a token waiting for its second request. slots[0] is the
// non-initiator, slots[1] the initiator, as in the reference.
type pendingPair struct {
	token   Token
	slots   [2]*request
	expires time.Time
}

type request struct {
	s        *Session
	remoteID uint32 // the requester's own stream id
}

// link is a matched pair. Index i is the side of slot i: sessions[i] asked,
// streams[i] is the relay stream allocated for it (connected to
// remoteIDs[i] on that peer's first packet) and relaying to streams[1-i].
type link struct {
	token     Token
	sessions  [2]*Session
	remoteIDs [2]uint32
	stop      chan struct{}
	stopped   bool // guarded by Server.mu
}

// NewServer returns a Server; attach connections with Accept.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Streams == nil {
		return nil, fmt.Errorf("blindrelay: ServerOptions.Streams is required")
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 4096
	}
	if opts.MaxPendingPerSession <= 0 {
		opts.MaxPendingPerSession = 64
	}
	if opts.MaxActive <= 0 {
		opts.MaxActive = 4096
	}
	if opts.PendingTimeout <= 0 {
		opts.PendingTimeout = 30 * time.Second
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	if opts.MaxSessionsPerSource <= 0 {
		opts.MaxSessionsPerSource = DefaultMaxSessionsPerSource
	}
	if opts.FirstMessageTimeout == 0 {
		opts.FirstMessageTimeout = DefaultFirstMessageTimeout
	}
	s := &Server{
		opts:     opts,
		pending:  map[Token]*pendingPair{},
		sessions: map[*Session]struct{}{},
		stop:     make(chan struct{}),
	}
	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Sessions = len(s.sessions)
	st.Pending = len(s.pending)
	st.Active = s.active
	return st
}

// Close closes every session's channel, tears down every relayed pair,
// and waits for the server's goroutines. The Muxes stay open: they belong
// to the caller. Idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		sessions := make([]*Session, 0, len(s.sessions))
		for ss := range s.sessions {
			sessions = append(sessions, ss)
		}
		s.mu.Unlock()
		for _, ss := range sessions {
			ss.Close()
		}
		close(s.stop)
		s.wg.Wait()
	})
	return nil
}

// AcceptOptions describe one connection to the relay.
type AcceptOptions struct {
	// ID is the channel id: the connecting peer's public key, as hyperdht
	// uses (the connection's remote public key).
	ID []byte
	// RemoteAddr, when valid, pins the relay streams allocated for this
	// session to that source address: the first packet must come from it,
	// otherwise it is dropped. Peers send their relayed stream from the
	// socket of their relay connection, so this is the connection's remote
	// address. The reference connects to whoever sends first; leave it
	// unset for that behaviour (e.g. a relay behind several addresses).
	RemoteAddr netip.AddrPort
	// Source is the connection's remote address, for
	// ServerOptions.MaxSessionsPerSource. When unset, RemoteAddr's is
	// used; with neither, the session counts only towards MaxSessions.
	Source netip.Addr
}

// Session is one connection's blind-relay channel on the server.
type Session struct {
	srv     *Server
	mux     *protomux.Mux
	ch      *protomux.Channel
	pairMsg *protomux.Message[Pair]
	remote  netip.AddrPort
	src     netip.Prefix // invalid when the source is unknown

	// guarded by srv.mu
	closed bool
	// silentAfter is when the session is closed unless it has sent a pair
	// request; zero once it has (or with no FirstMessageTimeout).
	silentAfter time.Time
	pending     map[Token]int // slots this session holds per pending token
	npending    int
	links       map[Token]*link
}

// Accept opens the blind-relay channel on mux and serves it. Call it
// before mux can have read the peer's OPEN (see StartMux). Over
// MaxSessions or MaxSessionsPerSource it opens nothing and returns an
// error wrapping ErrLimit; the caller should close the connection.
func (s *Server) Accept(mux *protomux.Mux, opts AcceptOptions) (*Session, error) {
	ss := &Session{srv: s, mux: mux, remote: opts.RemoteAddr, pending: map[Token]int{}, links: map[Token]*link{}}
	switch {
	case opts.Source.IsValid():
		ss.src = admit.SourceOf(opts.Source)
	case opts.RemoteAddr.IsValid():
		ss.src = admit.SourceOf(opts.RemoteAddr.Addr())
	}
	perSource := s.opts.MaxSessionsPerSource
	if !ss.src.IsValid() {
		perSource = math.MaxInt
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if !s.sources.Acquire(ss.src, s.opts.MaxSessions, perSource) {
		s.stats.SessionsRefused++
		n := len(s.sessions)
		s.mu.Unlock()
		err := fmt.Errorf("%w: %d sessions open", ErrLimit, n)
		if n < s.opts.MaxSessions {
			err = fmt.Errorf("%w: %d sessions open from %v", ErrLimit, s.opts.MaxSessionsPerSource, ss.src)
		}
		s.report(err)
		return nil, err
	}
	if s.opts.FirstMessageTimeout > 0 {
		ss.silentAfter = time.Now().Add(s.opts.FirstMessageTimeout)
	}
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	ss.ch = mux.NewChannel(protomux.ChannelOptions{
		Protocol: Protocol,
		ID:       opts.ID,
		OnClose:  func(*protomux.Channel, bool) { ss.teardown() },
	})
	ss.pairMsg = protomux.AddMessage(ss.ch, pairCodec{}, func(_ *protomux.Channel, p Pair) { s.onPair(ss, p) })
	protomux.AddMessage(ss.ch, unpairCodec{}, func(_ *protomux.Channel, u Unpair) { s.onUnpair(ss, u.Token) })
	if err := ss.ch.Open(nil); err != nil {
		ss.teardown()
		if errors.Is(err, protomux.ErrDuplicateChannel) {
			return nil, fmt.Errorf("%w: %w", ErrDuplicateChannel, err)
		}
		return nil, fmt.Errorf("blindrelay: open channel: %w", err)
	}
	return ss, nil
}

// Close closes the session's channel: its pending pairings are dropped and
// its relayed pairs torn down (CHANNEL_CLOSED in the reference).
// Idempotent; the Mux stays open.
func (ss *Session) Close() error {
	ss.ch.Close()
	ss.teardown()
	return nil
}

// Done is closed when the session's channel has closed.
func (ss *Session) Done() <-chan struct{} { return ss.ch.Closed() }

func (ss *Session) teardown() {
	s := ss.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.closed {
		return
	}
	ss.closed = true
	for t := range ss.pending {
		if pp := s.pending[t]; pp != nil {
			s.removePendingLocked(pp)
			s.stats.Cancelled++
		}
	}
	for _, l := range ss.links {
		s.stopLinkLocked(l)
	}
	delete(s.sessions, ss)
	s.sources.Release(ss.src)
}

func (s *Server) report(err error) {
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}

// onPair runs on the session's Mux dispatcher.
func (s *Server) onPair(ss *Session, p Pair) {
	s.mu.Lock()
	// Any pair request, even one refused below, shows a client that
	// speaks the protocol; the caps and expiry bound what it holds next.
	ss.silentAfter = time.Time{}
	s.mu.Unlock()
	if !ValidStreamID(p.ID) {
		s.mu.Lock()
		s.stats.Refused++
		s.mu.Unlock()
		s.report(fmt.Errorf("%w: pair %x… asks for stream %d", ErrInvalidStreamID, p.Token[:4], p.ID))
		return
	}
	side := 0
	if p.IsInitiator {
		side = 1
	}
	s.mu.Lock()
	if s.closed || ss.closed {
		s.mu.Unlock()
		return
	}
	pp := s.pending[p.Token]
	var refuse string
	switch {
	case pp != nil && pp.slots[side] != nil:
		// The reference ignores a second request for a taken slot.
		s.stats.Ignored++
		s.mu.Unlock()
		return
	case ss.npending >= s.opts.MaxPendingPerSession:
		refuse = fmt.Sprintf("session holds %d pending pairings", ss.npending)
	case pp == nil && len(s.pending) >= s.opts.MaxPending:
		refuse = fmt.Sprintf("%d pairings pending", len(s.pending))
	case pp != nil && s.active >= s.opts.MaxActive:
		refuse = fmt.Sprintf("%d pairs active", s.active)
	}
	if refuse != "" {
		s.stats.Refused++
		s.mu.Unlock()
		s.report(fmt.Errorf("%w: pair %x…: %s", ErrLimit, p.Token[:4], refuse))
		return
	}
	if pp == nil {
		pp = &pendingPair{token: p.Token, expires: time.Now().Add(s.opts.PendingTimeout)}
		s.pending[p.Token] = pp
	}
	pp.slots[side] = &request{s: ss, remoteID: uint32(p.ID)}
	ss.pending[p.Token]++
	ss.npending++
	s.stats.Requested++
	if pp.slots[1-side] == nil {
		s.mu.Unlock()
		return
	}
	s.removePendingLocked(pp)
	l := &link{token: p.Token, stop: make(chan struct{})}
	for i, r := range pp.slots {
		l.sessions[i] = r.s
		l.remoteIDs[i] = r.remoteID
		r.s.links[p.Token] = l
	}
	s.active++
	s.wg.Add(1)
	s.mu.Unlock()
	// Stream creation goes through the UDX loop; do it off the dispatcher.
	go s.runLink(l)
}

// onUnpair runs on the session's Mux dispatcher.
func (s *Server) onUnpair(ss *Session, token Token) {
	s.mu.Lock()
	if pp := s.pending[token]; pp != nil && ss.pending[token] > 0 {
		// Before the match the whole pairing is dropped, as in the
		// reference. Unlike the reference, only a session that holds one
		// of its slots may cancel it: the token is a shared secret, but a
		// stranger should not be able to probe for it this way.
		s.removePendingLocked(pp)
		s.stats.Cancelled++
		s.mu.Unlock()
		return
	}
	if l := ss.links[token]; l != nil {
		s.stopLinkLocked(l)
		s.stats.Cancelled++
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.report(fmt.Errorf("%w: unpair %x…", ErrUnknownToken, token[:4]))
}

func (s *Server) removePendingLocked(pp *pendingPair) {
	delete(s.pending, pp.token)
	for _, r := range pp.slots {
		if r == nil {
			continue
		}
		if r.s.pending[pp.token]--; r.s.pending[pp.token] <= 0 {
			delete(r.s.pending, pp.token)
		}
		r.s.npending--
	}
}

// stopLinkLocked asks the link's goroutine to tear it down.
func (s *Server) stopLinkLocked(l *link) {
	if !l.stopped {
		l.stopped = true
		close(l.stop)
	}
}

// runLink creates and wires the two relay streams of l, answers both
// peers, then waits until either stream ends, the link is stopped, the
// server closes or the pair goes idle, and tears everything down.
func (s *Server) runLink(l *link) {
	defer s.wg.Done()
	var streams [2]*udx.Stream
	defer func() {
		for _, st := range streams {
			if st != nil {
				// A relaying stream dies without sending DESTROY;
				// destroying one also ends the other (udx relay rules).
				st.Destroy()
			}
		}
		s.mu.Lock()
		for _, ss := range l.sessions {
			if ss.links[l.token] == l {
				delete(ss.links, l.token)
			}
		}
		s.stopLinkLocked(l)
		s.active--
		s.mu.Unlock()
	}()

	for i := range streams {
		st, err := s.newRelayStream(l.remoteIDs[i], l.sessions[i].remote)
		if err != nil {
			s.report(fmt.Errorf("blindrelay: relay stream for pair %x…: %w", l.token[:4], err))
			return
		}
		streams[i] = st
	}
	for i := range streams {
		if err := streams[i].RelayTo(streams[1-i]); err != nil {
			s.report(fmt.Errorf("blindrelay: relay pair %x…: %w", l.token[:4], err))
			return
		}
	}
	s.mu.Lock()
	if l.stopped {
		s.mu.Unlock()
		return
	}
	s.stats.Matched++
	s.mu.Unlock()
	for i, ss := range l.sessions {
		// A failed send means that session is closing; its teardown stops
		// this link.
		_ = ss.pairMsg.Send(Pair{IsInitiator: i == 1, Token: l.token, ID: uint64(streams[i].ID())})
	}

	var tick <-chan time.Time
	if s.opts.IdleTimeout > 0 {
		t := time.NewTicker(s.opts.IdleTimeout)
		defer t.Stop()
		tick = t.C
	}
	var seen uint64
	for {
		select {
		case <-streams[0].Done():
			return
		case <-streams[1].Done():
			return
		case <-l.stop:
			return
		case <-s.stop:
			return
		case <-tick:
			n := streams[0].Stats().PacketsReceived + streams[1].Stats().PacketsReceived
			if n == seen {
				s.mu.Lock()
				s.stats.Idle++
				s.mu.Unlock()
				s.report(fmt.Errorf("%w: pair %x… after %v", ErrIdle, l.token[:4], s.opts.IdleTimeout))
				return
			}
			seen = n
		}
	}
}

// newRelayStream creates a stream with a random id whose firewall connects
// it, on the first packet, to the peer stream remoteID at the packet's
// source (the reference's _onfirewall), optionally only from pin.
func (s *Server) newRelayStream(remoteID uint32, pin netip.AddrPort) (*udx.Stream, error) {
	fw := func(_ *udx.Stream, _ *udx.Socket, from netip.AddrPort) udx.FirewallVerdict {
		if pin.IsValid() && from != netip.AddrPortFrom(pin.Addr().Unmap(), pin.Port()) {
			return udx.FirewallDrop
		}
		return udx.FirewallConnect
	}
	var err error
	for range 16 {
		var b [4]byte
		if _, err = rand.Read(b[:]); err != nil {
			return nil, err
		}
		id := binary.LittleEndian.Uint32(b[:])
		if id == 0 {
			continue
		}
		var st *udx.Stream
		st, err = s.opts.Streams.NewStream(id, &udx.StreamOptions{Firewall: fw, RemoteID: remoteID})
		if err == nil {
			return st, nil
		}
		if !errors.Is(err, udx.ErrIDInUse) {
			return nil, err
		}
	}
	return nil, err
}

// janitor expires pending pairings and closes silent sessions. It wakes
// every quarter of the shorter timeout (at most every second), so either
// is enforced within that much of its due time.
func (s *Server) janitor() {
	defer s.wg.Done()
	shortest := s.opts.PendingTimeout
	if s.opts.FirstMessageTimeout > 0 {
		shortest = min(shortest, s.opts.FirstMessageTimeout)
	}
	every := min(max(shortest/4, 5*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			var expired []Token
			var silent []*Session
			s.mu.Lock()
			for tok, pp := range s.pending {
				if now.After(pp.expires) {
					s.removePendingLocked(pp)
					s.stats.Expired++
					expired = append(expired, tok)
				}
			}
			for ss := range s.sessions {
				if !ss.silentAfter.IsZero() && now.After(ss.silentAfter) {
					ss.silentAfter = time.Time{}
					s.stats.Silent++
					silent = append(silent, ss)
				}
			}
			s.mu.Unlock()
			for _, tok := range expired {
				s.report(fmt.Errorf("%w: pair %x…", ErrExpired, tok[:4]))
			}
			for _, ss := range silent {
				err := fmt.Errorf("%w: no pair request within %v", ErrSilent, s.opts.FirstMessageTimeout)
				ss.Close()
				// Destroy does not wait for the Mux's goroutines, so
				// one stuck connection cannot stall the janitor.
				ss.mux.Destroy(err)
				s.report(err)
			}
		}
	}
}
