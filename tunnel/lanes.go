package tunnel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// A peer connection is one reliable ordered stream, so a packet lost from
// a bulk transfer holds up every other tunnelled connection's bytes behind
// its retransmission (a 1-byte echo beside a download on a lossy 80 ms link
// measured 3.2 RTT p50 / 4.7 RTT p95, against 1.8 / 2.2 over a connection
// of its own). A session therefore runs on a laneConn: the primary
// connection (lane B, bulk) and, once attached, a second one (lane I,
// interactive). yamux writes its frames to the laneConn as to any
// connection; the laneConn sends each stream's frames on one lane at a
// time, and the receiving laneConn merges the two lanes back into one
// frame stream in which every stream's frames are in the order they were
// sent. Frames of different streams may pass each other, which yamux does
// not mind: streams are independent and each stream's frames keep their
// order.
//
// A stream moves between the lanes at a frame boundary, and its sender
// then writes a SWITCH frame on the old lane after the stream's last frame
// there. The receiver holds the frames of a stream that arrive on the lane
// it does not currently expect the stream on until the SWITCH arrives on
// the expected one, so no stream ever sees its frames reordered. Nothing
// else is coordinated: each side attaches when its lane is ready, and the
// first frame either side sends for a stream, on whichever lane, starts it
// there.
//
// go-yamux (v5.1.0, stream.go) sends SYN on the opener's first frame of a
// stream (OpenStream queues it before returning the stream) and ACK on the
// acceptor's (AcceptStream queues it before returning the stream); the
// only other first frame is the RST with which the session refuses a
// stream it cannot accept, and a reset goes to yamux at once anyway (see
// laneRouter.recv). The receiver relies on exactly that to tell a stream's
// first frame from a frame that overtook it on the other lane.
const (
	laneB = 0 // the primary connection: bulk streams, and everything before attach
	laneI = 1 // the interactive lane

	// bulkAfter is how many data bytes a stream sends, since it last went
	// quiet, before it moves to lane B. Interactive traffic (keystrokes,
	// requests, small responses) stays under it and keeps lane I short,
	// so its frames wait behind at most other small ones; a transfer past
	// it is one that a lost packet delays by a retransmission anyway, and
	// it then fills lane B instead of lane I.
	bulkAfter = 64 << 10
	// idleBack is how long a stream sends no data before its byte count
	// starts again, and a bulk stream moves back to lane I at its next
	// frame: a connection that was a download and now waits for its next
	// request is interactive again. It is far above a round trip, so a
	// transfer that pauses for flow control does not flap between lanes.
	idleBack = time.Second

	// laneBufMax bounds what a lane's writer has queued for its connection
	// (plus the write under way): enough to keep a connection busy between
	// two wake-ups of its writer. Once lane B's queue is full, yamux's send
	// loop waits in Write with a bulk frame, and the frames behind it in
	// yamux's queue (the send gate keeps that short) wait for room.
	laneBufMax = 256 << 10
	// laneWriteMax is the most a lane's writer hands its connection at
	// once: one secret-stream frame (secretstream.DefaultWriteFrameSize).
	// Room in a full lane B then comes in steps of that much rather than
	// of the whole queue, which at 20 Mbit/s would be 100 ms apart.
	laneWriteMax = 64 << 10
	// inboxMax bounds the frames delivered to yamux and not yet read (plus
	// one frame), by frameCost. yamux's receive loop drains them
	// continuously.
	inboxMax = 256 << 10
	// maxHeld bounds the bytes of frames held for streams waiting for a
	// SWITCH or a first frame from the other lane. What a peer sends
	// within the windows we granted is held at most until the other lane
	// catches up: mostly a stream that moved to lane B while lane I
	// retransmits the SWITCH, one retransmission's worth of the path's
	// rate (1.25 MB at 100 Mbit/s and 100 ms), and never more than the
	// stream's window. Those windows are counted in the session's memory
	// budget already; maxHeld is what a peer that ignores them, or never
	// sends the SWITCH, can make us hold before the session fails: one
	// largest window (maxWindow), and an Exposer session's default share
	// of Budget.Memory. Held frames are charged by frameCost, and on an
	// Exposer what is held past the session's windows is charged to its
	// budget too (setHeldCharge), so a stranger's session fails sooner
	// when the budget is small or spent.
	maxHeld      = maxWindow
	heldOverhead = 64
	// maxLaneFrame is the largest data frame body accepted. A frame is read
	// whole before it is routed (so a lane stalled in the middle of a frame
	// never holds up the other), and go-yamux senders split data at their
	// MaxMessageSize (16 KiB here, 64 KiB by default).
	maxLaneFrame = 1 << 20
	// closeFlush is how long Close lets the writers send what yamux has
	// already written (a final go away, a FIN) before it closes the lanes.
	closeFlush = 100 * time.Millisecond

	// laneSwitchVersion marks a SWITCH frame, which never reaches yamux:
	// 12 bytes laid out as a yamux header,
	//
	//	0  version 'K' (0x4b; yamux's is 0)
	//	1  type 0
	//	2  flags 0 (2 bytes)
	//	4  stream ID (4 bytes, big-endian, not 0)
	//	8  length 0 (4 bytes)
	//
	// sent on the lane a stream leaves, after its last frame there: the
	// stream's next frames come on the other lane.
	laneSwitchVersion = 'K'

	muxTypeGoAway = 3
	muxFlagSYN    = 1
	muxFlagFIN    = 4
	muxFlagRST    = 8
)

var (
	// errLaneProtocol fails a laneConn whose peer sent what no laneConn
	// sends.
	errLaneProtocol = errors.New("tunnel: lane protocol error")
	// errLaneHeld fails a laneConn that would hold more than maxHeld bytes
	// of frames waiting for the other lane.
	errLaneHeld = errors.New("tunnel: too many frames held for the other lane")
	// errLaneAttached is attach's answer when a lane is already attached.
	errLaneAttached = errors.New("tunnel: interactive lane already attached")
)

var laneNames = [2]string{"bulk", "interactive"}

// laneStats counts what a laneConn did, for tests and diagnostics.
type laneStats struct {
	ToBulk        uint64    // streams moved from lane I to lane B (SWITCH sent on I)
	ToInteractive uint64    // streams moved from lane B to lane I (SWITCH sent on B)
	SwitchesRecvd uint64    // SWITCH frames received on a stream's expected lane
	FramesSent    [2]uint64 // yamux frames sent per lane
	FramesRecvd   [2]uint64 // yamux frames received per lane
	Stale         uint64    // frames of streams already done, delivered for yamux to ignore
	Discarded     uint64    // frames that came after their stream's end (reset, or ended both ways), dropped
	Held          int       // bytes held now
	Streams       int       // streams with state now
}

// laneStream is what a laneConn knows of one yamux stream, in both
// directions. It is dropped when the stream is done (see laneRouter.drop).
type laneStream struct {
	sendStarted bool
	sendLane    int
	bulk        int // data bytes sent since the stream last went quiet
	lastData    time.Time
	finSent     bool

	recvStarted bool
	unopened    bool // a remote stream known only from frames that overtook its SYN
	recvLane    int
	finRecvd    bool
	held        [2][][]byte // frames that came on a lane other than recvLane
	heldCost    [2]int      // their frameCost
}

// laneRouter is the state of a laneConn's routing in both directions,
// without its I/O, so that the fuzz target can drive it directly. The
// laneConn's mu guards it.
type laneRouter struct {
	streams  map[uint32]*laneStream
	attached bool
	idleBack time.Duration

	// What remote stream IDs have been opened: go-yamux numbers a side's
	// streams 2 apart in the order it opens them, and a side sends its
	// SYNs on lane B before it attaches and on lane I after, so the SYNs
	// on each lane come in increasing ID order. remoteParity is -1 until
	// a SYN in either direction tells which IDs are the remote's.
	remoteParity int
	synSeen      [2]bool
	synMin       [2]uint32
	synMax       [2]uint32

	held  int
	stats laneStats
}

func newLaneRouter() laneRouter {
	return laneRouter{streams: make(map[uint32]*laneStream), idleBack: idleBack, remoteParity: -1}
}

type laneHeader struct {
	version, typ byte
	flags        uint16
	id, length   uint32
}

func parseLaneHeader(h []byte) laneHeader {
	return laneHeader{
		version: h[0],
		typ:     h[1],
		flags:   binary.BigEndian.Uint16(h[2:4]),
		id:      binary.BigEndian.Uint32(h[4:8]),
		length:  binary.BigEndian.Uint32(h[8:12]),
	}
}

func (h laneHeader) isSwitch() bool { return h.version == laneSwitchVersion }

// bodyLen is how many bytes follow the header.
func (h laneHeader) bodyLen() int {
	if h.version == 0 && h.typ == muxTypeData {
		return int(h.length)
	}
	return 0
}

func (h laneHeader) check() error {
	switch {
	case h.version == laneSwitchVersion:
		if h.typ != 0 || h.flags != 0 || h.length != 0 || h.id == 0 {
			return fmt.Errorf("%w: malformed SWITCH frame", errLaneProtocol)
		}
	case h.version != 0:
		return fmt.Errorf("%w: frame version %d", errLaneProtocol, h.version)
	case h.typ > muxTypeGoAway:
		return fmt.Errorf("%w: frame type %d", errLaneProtocol, h.typ)
	case h.typ == muxTypeData && h.length > maxLaneFrame:
		return fmt.Errorf("%w: data frame of %d bytes", errLaneProtocol, h.length)
	}
	return nil
}

func switchFrame(id uint32) []byte {
	f := make([]byte, muxHeaderSize)
	f[0] = laneSwitchVersion
	binary.BigEndian.PutUint32(f[4:8], id)
	return f
}

func (r *laneRouter) defaultLane() int {
	if r.attached {
		return laneI
	}
	return laneB
}

// send picks the lane of a frame we send, from its header. switchOn is
// the lane a SWITCH for the stream must be written to first, or -1.
func (r *laneRouter) send(h laneHeader, now time.Time) (lane, switchOn int) {
	if h.id == 0 {
		// Pings and go aways: a ping measures the round trip, which lane
		// I shows without lane B's queue.
		r.stats.FramesSent[r.defaultLane()]++
		return r.defaultLane(), -1
	}
	e := r.streams[h.id]
	if e == nil {
		if h.flags&muxFlagSYN == 0 {
			// A late frame of a stream that is done: the receiver has
			// dropped it too, or drops it together with what it holds
			// for it once the end it is waiting for arrives.
			return r.defaultLane(), -1
		}
		if r.remoteParity < 0 {
			r.remoteParity = int(h.id%2) ^ 1
		}
		e = &laneStream{}
		r.streams[h.id] = e
	}
	switchOn = -1
	if !e.sendStarted {
		e.sendStarted, e.sendLane, e.lastData = true, r.defaultLane(), now
	} else if r.attached {
		if now.Sub(e.lastData) >= r.idleBack {
			e.bulk = 0
		}
		want := laneI
		if e.bulk > bulkAfter {
			want = laneB
		}
		if want != e.sendLane {
			switchOn, e.sendLane = e.sendLane, want
			if want == laneB {
				r.stats.ToBulk++
			} else {
				r.stats.ToInteractive++
			}
		}
	}
	if h.typ == muxTypeData {
		e.bulk += int(h.length)
		e.lastData = now
	}
	if h.flags&muxFlagFIN != 0 {
		e.finSent = true
	}
	lane = e.sendLane
	r.stats.FramesSent[lane]++
	if h.flags&muxFlagRST != 0 || (e.finSent && e.finRecvd) {
		r.drop(h.id, e)
	}
	return lane, switchOn
}

// drop forgets a stream that is done: reset either way, or ended both
// ways. yamux has forgotten it too then, so what is held for it (frames
// that came after its end) goes, and frames that come for it later are
// delivered for yamux to ignore.
func (r *laneRouter) drop(id uint32, e *laneStream) {
	r.held -= e.heldCost[laneB] + e.heldCost[laneI]
	r.stats.Discarded += uint64(len(e.held[laneB]) + len(e.held[laneI]))
	delete(r.streams, id)
}

func (r *laneRouter) noteSyn(lane int, id uint32) {
	r.remoteParity = int(id % 2)
	if !r.synSeen[lane] || id < r.synMin[lane] {
		r.synMin[lane] = id
	}
	if !r.synSeen[lane] || id > r.synMax[lane] {
		r.synMax[lane] = id
	}
	r.synSeen[lane] = true
}

// unopened reports whether id is a remote stream whose SYN has not come
// yet: one of its frames overtook it on the other lane.
func (r *laneRouter) unopened(id uint32) bool {
	if r.remoteParity < 0 {
		return true // no stream was opened either way yet
	}
	if int(id%2) != r.remoteParity {
		return false
	}
	// The remote's SYNs before it attached (lane B) have lower IDs than
	// those after (lane I), so an ID between the two ranges is one whose
	// SYN is still on its way on lane B.
	if r.synSeen[laneB] && id <= r.synMax[laneB] {
		return false
	}
	return !r.synSeen[laneI] || id < r.synMin[laneI] || id > r.synMax[laneI]
}

// recv routes a whole frame that arrived on lane and appends to out the
// frames to hand to yamux now, in order. Its work is linear in the frames
// routed: a frame is held, released and routed once for each SWITCH that
// passes it, and a SWITCH hands over the frames behind it as a whole.
func (r *laneRouter) recv(lane int, f []byte, out [][]byte) ([][]byte, error) {
	// queue holds frames that came on qlane, of f's stream once it holds
	// more than f: f, then what a SWITCH or a first frame released.
	queue, qlane, qcost := [][]byte{f}, lane, frameCost(f)
	for len(queue) > 0 {
		b := queue[0]
		queue = queue[1:]
		qcost -= frameCost(b)
		h := parseLaneHeader(b)
		if h.id == 0 {
			out = append(out, b)
			r.stats.FramesRecvd[qlane]++
			continue
		}
		e := r.streams[h.id]
		if e == nil {
			switch {
			case !h.isSwitch() && h.flags&muxFlagSYN != 0:
			case r.unopened(h.id):
			default:
				// A late frame of a stream that is done.
				if !h.isSwitch() {
					out = append(out, b)
					r.stats.FramesRecvd[qlane]++
					r.stats.Stale++
				}
				continue
			}
			e = &laneStream{unopened: h.flags&muxFlagSYN == 0}
			r.streams[h.id] = e
		}
		if !h.isSwitch() && h.flags&muxFlagRST != 0 && !e.unopened {
			// A reset goes to yamux at once, on whichever lane it came:
			// yamux drops what a reset stream has received and not yet
			// read, so what the stream sent before it, and is held or on
			// its way on the other lane, is of no use. (A remote stream
			// yamux has not seen the SYN of would not know the reset.)
			out = append(out, b)
			r.stats.FramesRecvd[qlane]++
			r.drop(h.id, e)
			r.stats.Discarded += uint64(len(queue))
			queue = nil
			continue
		}
		if !e.recvStarted {
			// A remote stream starts with its SYN; one of ours with the
			// ACK.
			first := uint16(muxFlagSYN | muxFlagACK)
			if e.unopened {
				first = muxFlagSYN
			}
			if h.isSwitch() || h.flags&first == 0 {
				if err := r.hold(e, qlane, b); err != nil {
					return out, err
				}
				continue
			}
			e.recvStarted, e.recvLane, e.unopened = true, qlane, false
			if h.flags&muxFlagSYN != 0 {
				r.noteSyn(qlane, h.id)
			}
			if len(e.held[qlane]) > 0 {
				// Nothing of the stream comes before its first frame on
				// the same lane unless the sender broke go-yamux's order;
				// if it did, keep that order.
				held, cost := r.take(e, qlane)
				queue = append(append(held, b), queue...)
				qcost += cost + frameCost(b)
				continue
			}
		}
		if qlane != e.recvLane {
			if err := r.hold(e, qlane, b); err != nil {
				return out, err
			}
			continue
		}
		if h.isSwitch() {
			r.stats.SwitchesRecvd++
			old := e.recvLane
			e.recvLane ^= 1
			// What follows the SWITCH in queue came after it on the lane
			// the stream left, so it is held again, ahead of nothing (a
			// stream's current lane has nothing held). What the other
			// lane brought meanwhile comes next, as if it had just
			// arrived; it may switch back.
			if len(queue) > 0 {
				e.held[old], e.heldCost[old] = queue, qcost
				r.held += qcost
			}
			qlane = e.recvLane
			queue, qcost = r.take(e, qlane)
			continue
		}
		out = append(out, b)
		r.stats.FramesRecvd[qlane]++
		if h.flags&muxFlagFIN != 0 {
			e.finRecvd = true
		}
		if e.finSent && e.finRecvd {
			// All queue holds is of this stream and came after its end.
			r.drop(h.id, e)
			r.stats.Discarded += uint64(len(queue))
			queue = nil
		}
	}
	return out, nil
}

// take returns and forgets the frames held for e from lane.
func (r *laneRouter) take(e *laneStream, lane int) ([][]byte, int) {
	held, cost := e.held[lane], e.heldCost[lane]
	e.held[lane], e.heldCost[lane] = nil, 0
	r.held -= cost
	return held, cost
}

func (r *laneRouter) hold(e *laneStream, lane int, b []byte) error {
	n := frameCost(b)
	if r.held+n > maxHeld {
		return fmt.Errorf("%w (%d bytes, stream %d)", errLaneHeld, r.held+n, binary.BigEndian.Uint32(b[4:8]))
	}
	r.held += n
	e.held[lane] = append(e.held[lane], b)
	e.heldCost[lane] += n
	return nil
}

// Received frames are read into buffers of their own size class: a bulk
// stream's frames pass through at hundreds of MB/s on a fast path, which as
// garbage cost as much CPU as the copying, so the two data sizes are
// pooled: go-yamux's largest body (64 KiB) and ours (16 KiB, muxConfig's
// MaxMessageSize). Smaller frames (window updates, pings: a header alone)
// get buffers of their own size. What a frame holds while it waits (in
// the inbox, or held for the other lane) is charged by its buffer's
// capacity (frameCost), so that many small frames cannot make a buffer
// each of a larger class count as their length.
const (
	laneFrameSmall = muxHeaderSize + 16<<10
	laneFrameLarge = muxHeaderSize + 64<<10
	// laneFramePoolMin is the smallest frame read into a pooled buffer.
	laneFramePoolMin = laneFrameSmall / 2
)

var laneFramePools = [2]sync.Pool{
	{New: func() any { b := make([]byte, 0, laneFrameSmall); return &b }},
	{New: func() any { b := make([]byte, 0, laneFrameLarge); return &b }},
}

func getLaneFrame(n int) []byte {
	switch {
	case n < laneFramePoolMin || n > laneFrameLarge:
		return make([]byte, n)
	case n <= laneFrameSmall:
		return (*laneFramePools[0].Get().(*[]byte))[:n]
	}
	return (*laneFramePools[1].Get().(*[]byte))[:n]
}

// putLaneFrame returns a frame Read has used up to its pool.
func putLaneFrame(f []byte) {
	for i, c := range [2]int{laneFrameSmall, laneFrameLarge} {
		if cap(f) == c {
			f = f[:0]
			laneFramePools[i].Put(&f)
			return
		}
	}
}

// frameCost is what a received frame holds while it waits: its buffer,
// and heldOverhead for its bookkeeping, so that empty frames count too.
func frameCost(f []byte) int { return cap(f) + heldOverhead }

// readLaneFrame reads one whole frame (header and body) from a lane.
func readLaneFrame(r io.Reader) ([]byte, error) {
	var hb [muxHeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, err
	}
	h := parseLaneHeader(hb[:])
	if err := h.check(); err != nil {
		return nil, err
	}
	f := getLaneFrame(muxHeaderSize + h.bodyLen())
	copy(f, hb[:])
	if _, err := io.ReadFull(r, f[muxHeaderSize:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return f, nil
}

// laneConn is the connection a yamux session runs on: the primary
// connection and, once attached, the interactive lane (see laneB).
//
// If either lane's connection fails, the laneConn fails: Read and Write
// return the error and yamux ends the session. A failed interactive lane
// ends the session too, though lane B might carry on: streams have frames
// in flight on both lanes, and those on the failed lane are lost.
type laneConn struct {
	primary net.Conn

	mu      sync.Mutex // guards r, charge and charged
	r       laneRouter
	charge  func(int64) error // setHeldCharge
	charged int               // r.held as charge was last told

	// Write's parse of the frames yamux writes, which may split anywhere.
	wmu      sync.Mutex
	wh       [muxHeaderSize]byte
	whn      int
	whRouted bool // wh is whole and routed to wlane, not yet queued
	wlane    int
	wbody    int // body bytes of the current frame still to come

	// recvMu makes routing a received frame and queueing what it
	// delivers one step, so the two lanes' readers deliver in the order
	// the router decided.
	recvMu  sync.Mutex
	recvOut [][]byte

	bmu sync.Mutex // guards the rest
	// Each kind of wait has a signal of its own, so that a frame moving
	// on wakes only the goroutine waiting for it (on a bulk transfer,
	// one wake-up where a signal for all made three): Read waits on
	// sigData, deliver on sigRoom, a lane's writer on sigQueued, a Write
	// for room on a lane on sigSpace, Close for the writers on sigDone.
	// changedLocked fires them all, for what concerns every waiter (a
	// failure, Close, a deadline).
	sigData, sigRoom, sigDone laneSignal
	sigQueued, sigSpace       [2]laneSignal
	conns                     [2]net.Conn
	out                       [2]byteQueue // queued for each lane's writer
	runs                      [2][]dataRun // what out holds, data bodies or not
	// onSent, if set before any Write, gets the data-body bytes of each
	// batch a lane's writer has handed its connection: the send gate's
	// credit is for data not yet there, and data waiting in a lane's
	// queue must count, or a bulk stream's frames would fill lane B's
	// queue and leave yamux's send loop waiting on it in front of lane
	// I's frames.
	onSent      func(int)
	inq         [][]byte // delivered frames not yet read; inq[0] from inOff
	inOff       int
	inBytes     int // unread bytes of inq
	inCost      int // frameCost of inq's frames, bounded by inboxMax
	rdl, wdl    time.Time
	closed      bool
	err         error
	writersLeft int
	eofs        int // lanes whose reader met a clean end

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// newLaneConn returns the net.Conn a yamux session runs on. primary
// carries everything until attach adds the interactive lane. Both lanes
// are corked (cork.go): a new stream's SYN or ACK leaves with its first
// bytes.
func newLaneConn(primary net.Conn) *laneConn {
	primary = newCorkConn(primary)
	l := &laneConn{primary: primary, r: newLaneRouter()}
	l.conns[laneB] = primary
	l.writersLeft = 1
	l.wg.Add(2)
	go l.readLoop(laneB, primary)
	go l.writeLoop(laneB)
	return l
}

// setHeldCharge makes what the laneConn holds for the other lane count
// against a memory budget (an Exposer's sessionMemory.holdFrames): it is
// told of every change, and a refused increase fails the laneConn as
// maxHeld does.
func (l *laneConn) setHeldCharge(charge func(int64) error) {
	l.mu.Lock()
	l.charge = charge
	l.mu.Unlock()
}

// chargeHeldLocked tells charge how much the router's held bytes changed
// since it was last told.
func (l *laneConn) chargeHeldLocked() error {
	d := int64(l.r.held - l.charged)
	if l.charge == nil || d == 0 {
		return nil
	}
	if err := l.charge(d); err != nil {
		return fmt.Errorf("%w: %w", errLaneHeld, err)
	}
	l.charged = l.r.held
	return nil
}

// attach adds the interactive lane (the other end's attach gets the other
// end of the same connection). At most once; error if already attached or
// closed. Each side may attach at any moment relative to traffic: frames
// the peer sends on the lane before we attach wait in c. Both ends must
// attach: once one has, streams it moves to lane I wait for the other.
func (l *laneConn) attach(c net.Conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bmu.Lock()
	defer l.bmu.Unlock()
	switch {
	case l.closed:
		return fmt.Errorf("tunnel: attach: %w", net.ErrClosed)
	case l.err != nil:
		return fmt.Errorf("tunnel: attach: %w", l.err)
	case l.conns[laneI] != nil:
		return errLaneAttached
	}
	c = newCorkConn(c)
	if !l.wdl.IsZero() {
		_ = c.SetWriteDeadline(l.wdl)
	}
	l.conns[laneI] = c
	l.writersLeft++
	l.r.attached = true
	l.wg.Add(2)
	go l.readLoop(laneI, c)
	go l.writeLoop(laneI)
	return nil
}

func (l *laneConn) stats() laneStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.r.stats
	s.Held = l.r.held
	s.Streams = len(l.r.streams)
	return s
}

// setIdleBack replaces idleBack (tests make streams move back quickly).
func (l *laneConn) setIdleBack(d time.Duration) {
	l.mu.Lock()
	l.r.idleBack = d
	l.mu.Unlock()
}

// laneSignal wakes the goroutines waiting on it; a laneConn's bmu guards
// it. Its channel is made only when someone waits.
type laneSignal struct {
	ch     chan struct{}
	wanted bool
}

func (s *laneSignal) fire() {
	if s.wanted {
		close(s.ch)
		s.ch, s.wanted = nil, false
	}
}

func (s *laneSignal) waitChan() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	s.wanted = true
	return s.ch
}

// changedLocked wakes every waiter.
func (l *laneConn) changedLocked() {
	l.sigData.fire()
	l.sigRoom.fire()
	l.sigDone.fire()
	for i := range l.sigQueued {
		l.sigQueued[i].fire()
		l.sigSpace[i].fire()
	}
}

// waitLocked releases bmu until sig fires or dl (if set) passes.
func (l *laneConn) waitLocked(sig *laneSignal, dl time.Time) {
	kick := sig.waitChan()
	l.bmu.Unlock()
	defer l.bmu.Lock()
	if dl.IsZero() {
		<-kick
		return
	}
	t := time.NewTimer(time.Until(dl))
	defer t.Stop()
	select {
	case <-kick:
	case <-t.C:
	}
}

func passed(dl time.Time) bool { return !dl.IsZero() && !time.Now().Before(dl) }

// fail ends the laneConn with err, unless it already ended.
func (l *laneConn) fail(err error) {
	l.bmu.Lock()
	if l.closed || l.err != nil {
		l.bmu.Unlock()
		return
	}
	l.err = err
	conns := l.conns
	l.changedLocked()
	l.bmu.Unlock()
	// The other lane's reader and writer may be blocked in their
	// connection.
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

func (l *laneConn) readLoop(lane int, c net.Conn) {
	defer l.wg.Done()
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		f, err := readLaneFrame(br)
		if err == nil {
			err = l.recvFrame(lane, f)
		}
		if err == io.EOF && !l.lastEOF() {
			// The peer closes both lanes at once, and what it wrote on
			// the other before (a go away) may still be arriving.
			return
		}
		if err != nil {
			l.fail(fmt.Errorf("tunnel: %s lane: %w", laneNames[lane], err))
			return
		}
	}
}

// lastEOF counts a lane that ended cleanly and reports whether all have.
func (l *laneConn) lastEOF() bool {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	l.eofs++
	n := 0
	for _, c := range l.conns {
		if c != nil {
			n++
		}
	}
	return l.eofs >= n
}

func (l *laneConn) recvFrame(lane int, f []byte) error {
	l.recvMu.Lock()
	defer l.recvMu.Unlock()
	l.mu.Lock()
	out, rerr := l.r.recv(lane, f, l.recvOut[:0])
	if err := l.chargeHeldLocked(); err != nil && rerr == nil {
		rerr = err
	}
	l.mu.Unlock()
	for i, d := range out {
		out[i] = nil
		if err := l.deliver(d); err != nil {
			clear(out)
			return err
		}
	}
	l.recvOut = out[:0]
	return rerr
}

// deliver queues a frame for Read, waiting while the queue is full.
func (l *laneConn) deliver(f []byte) error {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	c := frameCost(f)
	for l.inCost > 0 && l.inCost+c > inboxMax && !l.closed && l.err == nil {
		l.waitLocked(&l.sigRoom, time.Time{})
	}
	if l.closed || l.err != nil {
		return net.ErrClosed // the laneConn already ended; fail ignores this
	}
	l.inq = append(l.inq, f)
	l.inBytes += len(f)
	l.inCost += c
	l.sigData.fire()
	return nil
}

// Read returns delivered frames' bytes; after a failure, what was
// delivered before it and then the failure.
func (l *laneConn) Read(p []byte) (int, error) {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	for {
		if l.closed {
			return 0, net.ErrClosed
		}
		if l.inBytes > 0 {
			n := 0
			for n < len(p) && len(l.inq) > 0 {
				k := copy(p[n:], l.inq[0][l.inOff:])
				n += k
				l.inOff += k
				if l.inOff == len(l.inq[0]) {
					l.inCost -= frameCost(l.inq[0])
					putLaneFrame(l.inq[0])
					l.inq[0] = nil
					l.inq = l.inq[1:]
					l.inOff = 0
				}
			}
			l.inBytes -= n
			l.sigRoom.fire()
			return n, nil
		}
		if l.err != nil {
			return 0, l.err
		}
		if passed(l.rdl) {
			return 0, os.ErrDeadlineExceeded
		}
		l.waitLocked(&l.sigData, l.rdl)
	}
}

// Write takes yamux's frames, whole or in pieces, and queues each on its
// stream's lane. It blocks only while that lane's queue is full.
func (l *laneConn) Write(b []byte) (int, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	n := 0
	for {
		if l.whRouted {
			if _, err := l.enqueue(l.wlane, l.wh[:], true); err != nil {
				return n, err
			}
			l.whRouted, l.whn = false, 0
		}
		if len(b) == 0 {
			return n, nil
		}
		if l.wbody > 0 {
			k, err := l.enqueue(l.wlane, b[:min(len(b), l.wbody)], false)
			n += k
			b = b[k:]
			l.wbody -= k
			if err != nil {
				return n, err
			}
			continue
		}
		k := copy(l.wh[l.whn:], b)
		l.whn += k
		n += k
		b = b[k:]
		if l.whn < muxHeaderSize {
			return n, nil
		}
		h := parseLaneHeader(l.wh[:])
		if err := h.check(); err != nil || h.isSwitch() {
			l.whn = 0
			return n, fmt.Errorf("tunnel: lane write: %w", errLaneProtocol)
		}
		l.mu.Lock()
		lane, switchOn := l.r.send(h, time.Now())
		l.chargeHeldLocked() // a stream's end frees what was held for it
		l.mu.Unlock()
		if switchOn >= 0 {
			if err := l.enqueueSwitch(switchOn, h.id); err != nil {
				return n, err
			}
		}
		l.wlane, l.wbody, l.whRouted = lane, h.bodyLen(), true
	}
}

// enqueue queues p (all of it if whole, else what fits) for lane's writer.
func (l *laneConn) enqueue(lane int, p []byte, whole bool) (int, error) {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	for {
		if err := l.endedLocked(); err != nil {
			return 0, err
		}
		room := laneBufMax - l.out[lane].len()
		if room >= len(p) || (room > 0 && !whole) {
			k := min(room, len(p))
			l.out[lane].push(p[:k])
			// Only a data frame's body is enqueued in parts (whole
			// false); headers and SWITCHes are whole.
			l.noteRunLocked(lane, k, !whole)
			l.sigQueued[lane].fire()
			return k, nil
		}
		if passed(l.wdl) {
			return 0, os.ErrDeadlineExceeded
		}
		l.waitLocked(&l.sigSpace[lane], l.wdl)
	}
}

// enqueueSwitch queues a SWITCH even on a full lane: a stream leaving a
// stalled lane B must not keep the other streams' frames, which are
// behind it in yamux's send loop, from lane I. What this adds to a stalled
// lane is 12 bytes per move, and a lane stalled longer than yamux's write
// timeout (passed on by SetWriteDeadline) fails the session.
func (l *laneConn) enqueueSwitch(lane int, id uint32) error {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	if err := l.endedLocked(); err != nil {
		return err
	}
	l.out[lane].push(switchFrame(id))
	l.noteRunLocked(lane, muxHeaderSize, false)
	l.sigQueued[lane].fire()
	return nil
}

// dataRun is a run of n queued bytes that are, or are not, data bodies.
type dataRun struct {
	n    int
	data bool
}

func (l *laneConn) noteRunLocked(lane, n int, data bool) {
	rs := l.runs[lane]
	if k := len(rs); k > 0 && rs[k-1].data == data {
		rs[k-1].n += n
		return
	}
	l.runs[lane] = append(rs, dataRun{n, data})
}

// takeRunsLocked accounts for n bytes popped off lane's queue and returns
// how many of them were data bodies.
func (l *laneConn) takeRunsLocked(lane, n int) int {
	data := 0
	rs := l.runs[lane]
	for n > 0 && len(rs) > 0 {
		k := min(n, rs[0].n)
		if rs[0].data {
			data += k
		}
		n -= k
		rs[0].n -= k
		if rs[0].n == 0 {
			rs = rs[1:]
		}
	}
	if len(rs) == 0 {
		rs = l.runs[lane][:0]
	}
	l.runs[lane] = rs
	return data
}

// byteQueue is a FIFO of bytes that reuses its buffer.
type byteQueue struct {
	buf []byte
	off int
}

func (q *byteQueue) len() int { return len(q.buf) - q.off }

func (q *byteQueue) push(p []byte) {
	if q.off > 0 && len(q.buf)+len(p) > cap(q.buf) {
		q.buf = q.buf[:copy(q.buf, q.buf[q.off:])]
		q.off = 0
	}
	q.buf = append(q.buf, p...)
}

// pop moves up to limit bytes from the front of q to dst.
func (q *byteQueue) pop(dst []byte, limit int) []byte {
	k := min(q.len(), limit)
	dst = append(dst, q.buf[q.off:q.off+k]...)
	q.off += k
	if q.off == len(q.buf) {
		q.buf, q.off = q.buf[:0], 0
	}
	return dst
}

func (l *laneConn) endedLocked() error {
	if l.closed {
		return net.ErrClosed
	}
	return l.err
}

// writeLoop writes what is queued for lane to its connection, up to
// laneWriteMax in one write. After Close it writes what is left and
// returns.
func (l *laneConn) writeLoop(lane int) {
	defer l.wg.Done()
	var batch []byte
	l.bmu.Lock()
	defer l.bmu.Unlock()
	defer func() {
		l.writersLeft--
		l.sigDone.fire()
	}()
	for {
		for l.out[lane].len() == 0 && !l.closed && l.err == nil {
			l.waitLocked(&l.sigQueued[lane], time.Time{})
		}
		if l.err != nil || l.out[lane].len() == 0 {
			return
		}
		batch = l.out[lane].pop(batch[:0], laneWriteMax)
		data := l.takeRunsLocked(lane, len(batch))
		c, sent := l.conns[lane], l.onSent
		l.sigSpace[lane].fire()
		l.bmu.Unlock()
		_, err := c.Write(batch)
		if err == nil && data > 0 && sent != nil {
			sent(data)
		}
		l.bmu.Lock()
		if err != nil {
			if !l.closed {
				l.bmu.Unlock()
				l.fail(fmt.Errorf("tunnel: %s lane: %w", laneNames[lane], err))
				l.bmu.Lock()
			}
			return
		}
	}
}

// Close closes both lanes, after letting their writers send what is
// queued for up to closeFlush, and waits for the laneConn's goroutines.
// Pending and later Reads and Writes return net.ErrClosed.
func (l *laneConn) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.bmu.Lock()
		failed := l.err != nil
		l.closed = true
		conns := l.conns
		l.changedLocked()
		dl := time.Now().Add(closeFlush)
		l.bmu.Unlock()
		for _, c := range conns {
			if c != nil {
				_ = c.SetWriteDeadline(dl)
			}
		}
		l.bmu.Lock()
		for l.writersLeft > 0 && !passed(dl) {
			l.waitLocked(&l.sigDone, dl)
		}
		l.bmu.Unlock()
		for _, c := range conns {
			if c != nil {
				// After a failure the lanes are closed already.
				if cerr := c.Close(); c == l.primary && !failed {
					err = cerr
				}
			}
		}
		l.wg.Wait()
	})
	return err
}

func (l *laneConn) LocalAddr() net.Addr  { return l.primary.LocalAddr() }
func (l *laneConn) RemoteAddr() net.Addr { return l.primary.RemoteAddr() }

func (l *laneConn) SetDeadline(t time.Time) error {
	l.SetReadDeadline(t)
	return l.SetWriteDeadline(t)
}

// SetReadDeadline applies to Read, not to the lanes: their readers read
// whenever the peer sends.
func (l *laneConn) SetReadDeadline(t time.Time) error {
	l.bmu.Lock()
	defer l.bmu.Unlock()
	l.rdl = t
	l.changedLocked()
	return nil
}

// SetWriteDeadline applies to a Write waiting for room on its lane, and
// to the lanes' connections: yamux extends it while it writes, so a lane
// that takes nothing for longer than yamux's write timeout fails the
// session as a stalled connection under yamux would.
func (l *laneConn) SetWriteDeadline(t time.Time) error {
	l.bmu.Lock()
	l.wdl = t
	conns := l.conns
	closed := l.closed
	l.changedLocked()
	l.bmu.Unlock()
	if closed {
		return nil // Close's flush deadline stays
	}
	for _, c := range conns {
		if c != nil {
			if err := c.SetWriteDeadline(t); err != nil {
				return err
			}
		}
	}
	return nil
}
