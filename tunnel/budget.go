package tunnel

import (
	"fmt"
	"sync"

	"github.com/libp2p/go-yamux/v5"
)

// Budget bounds what an Exposer spends on its peers, after libp2p's
// resource manager and quic-go's stream limits: anyone who learns an
// exposed key can open sessions and streams, and without caps a peer that
// opens hundreds of streams towards a target that never reads makes the
// Exposer buffer a stream window for each. Zero fields take the Default*
// values below, which hold on a small VPS.
//
// A peer over a cap is turned away without touching what it already has:
// an extra session gets a refusal reply (a raw one a closed connection), an
// extra stream a yamux reset; either way one log line and one refused
// Event name the peer.
type Budget struct {
	// Sessions caps concurrent peer sessions: mux sessions and raw
	// connections together.
	Sessions int
	// StreamsPerSession caps the concurrent streams of one mux session.
	StreamsPerSession int
	// Streams caps concurrent streams across all sessions.
	Streams int
	// Memory caps, in bytes, the stream receive windows granted across
	// all sessions: what peers may make this process buffer for targets
	// slower than they are. Every stream holds yamux's fixed initial
	// window (256 KiB) from its first frame, so Memory also caps streams
	// at Memory/256 KiB; windows grow beyond that (up to 16 MiB, for
	// throughput on long paths) only while the budget has room, and one
	// session may take at most a quarter of it, so that one greedy peer
	// cannot leave nothing to grow into for the others. With many streams
	// open, new windows therefore stay small.
	Memory int64
}

// The defaults: 64 MiB of windows is 256 streams at the initial window,
// which is also the stream cap; 100 streams per session is quic-go's
// default, and at the initial window they already hold more than a
// session's quarter of the memory, so a session that opens them all gets
// no growth.
const (
	DefaultSessions          = 32
	DefaultStreamsPerSession = 100
	DefaultStreams           = 256
	DefaultMemory            = 64 << 20
)

// initialWindow is yamux's initial stream window, which the protocol lets
// a peer fill before any window update, so every accepted stream costs it.
const initialWindow = 256 << 10

func (b Budget) withDefaults() Budget {
	b.Sessions = orDefault(b.Sessions, DefaultSessions)
	b.StreamsPerSession = orDefault(b.StreamsPerSession, DefaultStreamsPerSession)
	b.Streams = orDefault(b.Streams, DefaultStreams)
	b.Memory = orDefault(b.Memory, DefaultMemory)
	return b
}

// Validate reports a negative cap, or a memory budget smaller than one
// stream's initial window.
func (b Budget) Validate() error {
	switch {
	case b.Sessions < 0 || b.StreamsPerSession < 0 || b.Streams < 0 || b.Memory < 0:
		return fmt.Errorf("%w: caps must not be negative", ErrBadBudget)
	case b.Memory != 0 && b.Memory < initialWindow:
		return fmt.Errorf("%w: memory %d is below one stream's window (%d bytes)", ErrBadBudget, b.Memory, initialWindow)
	}
	return nil
}

// accountant enforces an Exposer's Budget. Sessions and streams are
// counted when they are admitted; memory is reserved by yamux through
// sessionMemory, one span per stream.
type accountant struct {
	b Budget
	// perSession caps what one session's windows may grow into
	// (Memory/4 on an Exposer).
	perSession int64

	mu       sync.Mutex
	sessions int
	streams  int
	memory   int64
}

func newAccountant(b Budget) *accountant {
	b = b.withDefaults()
	return &accountant{b: b, perSession: b.Memory / 4}
}

// clientMemory bounds a Forwarder session's stream windows: its one
// session may use the whole DefaultMemory, since its peer is the service
// it chose to reach, but windows still grow only while that has room.
func clientMemory() *sessionMemory {
	a := newAccountant(Budget{})
	a.perSession = a.b.Memory
	s := a.session()
	s.extraInitial = clientInitialWindow - initialWindow
	return s
}

// admitSession counts a new peer session, or says which cap it is over.
func (a *accountant) admitSession() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sessions >= a.b.Sessions {
		return fmt.Errorf("%w: %d peer sessions already (max_sessions)", ErrOverBudget, a.sessions)
	}
	a.sessions++
	return nil
}

func (a *accountant) endSession() {
	a.mu.Lock()
	a.sessions--
	a.mu.Unlock()
}

// admitStream counts a new stream of s, or says which cap it is over. The
// stream's initial window is already reserved (yamux reserves it when the
// SYN arrives), so the memory check is on what is reserved now.
func (a *accountant) admitStream(s *sessionMemory) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case s.streams >= a.b.StreamsPerSession:
		return fmt.Errorf("%w: %d streams on this peer's session (max_streams_per_session)", ErrOverBudget, s.streams)
	case a.streams >= a.b.Streams:
		return fmt.Errorf("%w: %d streams across all peers (max_streams)", ErrOverBudget, a.streams)
	case a.memory > a.b.Memory:
		return fmt.Errorf("%w: %d MiB of stream windows granted (max_buffer)", ErrOverBudget, a.memory>>20)
	}
	s.streams++
	a.streams++
	return nil
}

func (a *accountant) endStream(s *sessionMemory) {
	a.mu.Lock()
	s.streams--
	a.streams--
	a.mu.Unlock()
}

// sessionMemory is one session's share of the accountant; its spans are
// yamux's per-stream MemoryManagers.
type sessionMemory struct {
	a       *accountant
	streams int   // admitted, guarded by a.mu
	memory  int64 // reserved by this session's spans, guarded by a.mu
	// extraInitial is what the session's streams start with beyond
	// yamux's 256 KiB (clientInitialWindow): yamux grants it in its first
	// window update without reserving it, so it is counted with the
	// 256 KiB it does reserve.
	extraInitial int64
	// held is what the session's laneConn holds for the other lane
	// (holdFrames), heldExtra the part of it charged to the budget;
	// both guarded by a.mu.
	held, heldExtra int64
}

func (a *accountant) session() *sessionMemory { return &sessionMemory{a: a} }

// holdFrames charges n more bytes (negative: fewer) of frames the session's
// laneConn holds for the other lane (lanes.go), or refuses an increase
// the budget has no room for. An honest peer's held frames are data it
// sent within the windows the session reserved, so up to that reservation
// they cost nothing more; past it (a peer that ignores its windows, or
// sends frames without data) they are charged as window growth is: within
// the total budget and the session's share of it. Without this, each
// session could hold maxHeld (16 MiB) outside the budget.
func (s *sessionMemory) holdFrames(n int64) error {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	held := max(0, s.held+n)
	extra := max(0, held-s.memory)
	d := extra - s.heldExtra
	if d > 0 && (a.memory+d > a.b.Memory || held > a.perSession) {
		return ErrOverBudget
	}
	a.memory += d
	s.held, s.heldExtra = held, extra
	return nil
}

// releaseHeld returns what holdFrames charged, when the session is over.
func (s *sessionMemory) releaseHeld() {
	a := s.a
	a.mu.Lock()
	a.memory -= s.heldExtra
	s.held, s.heldExtra = 0, 0
	a.mu.Unlock()
}

// newSpan is the MemoryManager factory yamux calls for every stream.
func (s *sessionMemory) newSpan() (yamux.MemoryManager, error) { return &span{s: s}, nil }

// span is one stream's memory: the initial window, reserved at yamux's
// top priority (255), which must succeed or yamux ends the whole session,
// so it is always granted (the accept check then refuses the stream if the
// budget is overdrawn); and window growth (lower priorities), granted
// only within the total budget and the session's quarter of it.
type span struct {
	s        *sessionMemory
	reserved int64 // guarded by s.a.mu
}

func (sp *span) ReserveMemory(size int, prio uint8) error {
	a := sp.s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	n := int64(size)
	if prio == 255 && sp.reserved == 0 {
		n += sp.s.extraInitial
	}
	if prio < 255 && (a.memory+n > a.b.Memory || sp.s.memory+n > a.perSession) {
		return ErrOverBudget
	}
	a.memory += n
	sp.s.memory += n
	sp.reserved += n
	return nil
}

func (sp *span) ReleaseMemory(size int) {
	sp.s.a.mu.Lock()
	sp.releaseLocked(int64(size))
	sp.s.a.mu.Unlock()
}

// Done releases everything the stream reserved; yamux calls it once, when
// the stream is gone.
func (sp *span) Done() {
	sp.s.a.mu.Lock()
	sp.releaseLocked(sp.reserved)
	sp.s.a.mu.Unlock()
}

func (sp *span) releaseLocked(n int64) {
	n = min(n, sp.reserved)
	sp.s.a.memory -= n
	sp.s.memory -= n
	sp.reserved -= n
}
