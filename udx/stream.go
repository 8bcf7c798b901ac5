package udx

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// FirewallVerdict is a Firewall's decision about a packet that reached a
// stream on a socket other than the one it is connected to (or before it is
// connected at all).
type FirewallVerdict int

const (
	// FirewallDrop discards the packet (udx-native's default).
	FirewallDrop FirewallVerdict = iota
	// FirewallAccept processes the packet without connecting.
	FirewallAccept
	// FirewallConnect connects the stream to the packet's socket and source
	// address with StreamOptions.RemoteID, then processes it: hyperdht's
	// passive open and blind-relay's pairing.
	FirewallConnect
	// FirewallHold keeps the packet (up to maxHeld per stream) and
	// replays it when the stream connects to the address it came from.
	// A hyperdht client uses it for the server's first packets, which can
	// outrun the handshake reply that names the server's stream id.
	FirewallHold
	// FirewallRoam processes the packet and, when it fits the stream
	// and brings news, makes its source address the peer's candidate
	// new address: the peer's NAT mapping or its own address may have
	// changed mid-connection (NAT rebinding, a phone moving from Wi-Fi
	// to mobile data). The connected stream moves there, keeping its
	// socket and remote id, once the layer above has authenticated bytes
	// that came from the candidate (Authenticated; roam.go says why).
	// Everything sent from then on, retransmissions included, goes to
	// the new address. Before the stream is connected it is
	// FirewallConnect; on a foreign socket of a connected stream,
	// FirewallAccept.
	FirewallRoam
)

// Firewall decides about packets for a stream arriving on a foreign or no
// socket. It runs on the instance's loop and must not block or call back
// into the stream.
type Firewall func(st *Stream, sock *Socket, from netip.AddrPort) FirewallVerdict

// StreamOptions configure NewStream. The zero value matches udx-native.
type StreamOptions struct {
	Firewall Firewall
	// RemoteID is used by FirewallConnect.
	RemoteID uint32
	// Seq is the initial sequence number (udx-native opts.seq).
	Seq uint32
	// Ack is the initial ack (udx-native connect opts.ack).
	Ack uint32
	// RecvWindow is the maximum advertised receive window in bytes
	// (libudx recv_rwnd_max, default 4 MiB).
	RecvWindow uint32
	// SendBuffer caps the bytes queued by Write that are not yet in
	// packets (default 4 MiB); below it, Write holds back to a few
	// milliseconds of the pacing rate (notsentLimit).
	SendBuffer int
	// MTUMax caps path MTU probing (default 1500). Set it to 1200 to
	// disable probing.
	MTUMax int
	// Timeout is how long a packet may go unacknowledged, retransmitted
	// every two RTOs, before the stream gives up with ErrTimeout; never
	// less than libudx's six RTOs, which is also what 0 means (about
	// 13 s on a path whose RTO is the 1 s floor). A longer one lets the
	// stream ride out a link that goes dark for a while (a handover, a
	// tunnel under a river): retransmissions go on, and the first one
	// after the link is back carries on where the stream stopped.
	Timeout time.Duration
}

// Stats are counters of one stream.
type Stats struct {
	PacketsSent, PacketsReceived, Retransmits uint64
	FastRecoveries, RTOs, DroppedSACKs        uint64
	Duplicates                                uint64 // DATA received twice
	Roams                                     uint64 // moves to a peer's new address (FirewallRoam)
	RoamCandidates                            uint64 // new addresses taken as candidates (FirewallRoam)
	RecvStalls                                uint64 // calls of the OnReceiveStall hook
	RTT                                       time.Duration
	Cwnd                                      uint32
	MTU                                       int
}

// Stream is a reliable, ordered byte stream over UDX (a net.Conn).
type Stream struct {
	u    *UDX
	id   uint32
	opts StreamOptions

	// ---- owned by the instance loop ----
	sock       *Socket
	remoteID   uint32
	raddr      netip.AddrPort
	ruaddr     *net.UDPAddr
	connected  bool
	dead       bool
	registered bool
	firewall   Firewall
	held       []heldPacket

	seq, ack, remoteAcked uint32
	sendRwnd, wl1, wl2    uint32
	rwndMax               uint32
	lastRwnd              uint32
	out                   outRing
	inflight, retrans     pktList
	freePkts              []*outPkt // acked packets' records, for newPkt
	cwnd, ssthresh        uint32
	srtt, rttvar, rto     int64
	rttHint               int64 // SetRTTHint's, until the first sample
	hintFromPeer          bool  // HintRTTFromPeer, until the peer's first packet
	heard                 bool  // a packet of the peer's has arrived (heardCh closed)
	rttMin                minmax
	rttMinSet, rttMinInit bool
	rackRTT, rackTimeSent int64
	rackNextSeq, rackFack uint32
	reorderingSeen        bool
	sacks                 int
	caState               uint8
	highSeq               uint32
	tlpInFlight           bool
	tlpIsRetrans          bool
	tlpPermitted          bool
	tlpEndSeq             uint32
	timer                 timerKind
	timerAt, nextRTOAt    int64
	paceAt, lingerAt      int64
	ackAt                 int64 // a delayed ACK is due (0: none pending)
	unacked               int   // DATA/END packets taken in since our last ACK went out
	keepalive             int64
	pacingRate            float64 // bytes/µs
	tokens                float64
	tbLast                int64
	delivered, lostCount  uint32
	deliveredTs           int64
	firstSentTs           int64
	appLimited            uint32
	bbr                   bbr

	mtu, mtuMax, probeSize, probeCount int
	mtuState                           int
	probeWanted                        bool

	remoteChanging     bool
	seqOnRemoteChanged uint32
	remoteChangedCh    chan struct{}
	// pathCh closes when a packet arrives from the remote set by the last
	// ChangeRemote (pathOK then): the peer has found the new path too.
	pathCh chan struct{}
	pathOK bool

	// Roaming (roam.go): the peer's candidate new address, not yet
	// authenticated, and what it has sent.
	cand     netip.AddrPort
	candU    *net.UDPAddr
	candOff  int64 // stream offset of the first byte delivered from cand; -1: none yet
	candAck  bool  // cand sent DATA/END since our last ACK to it
	fromCand bool  // the packet being processed came from cand
	rxOff    int64 // bytes delivered to the reader so far
	// The receive stall hook (roam.go, checkStall).
	onStall func()
	rxAt    int64 // when new data last arrived
	stallAt int64 // when to look for a stall (0: not armed)

	ooo          [][]byte
	oooTypes     [oooCap]uint8 // packet type, | oooFromCand
	blocks       []SACKBlock
	blockStore   []SACKBlock
	remoteEnding bool
	remoteEnded  uint32
	endedRemote  bool
	endSent      bool
	localEnded   bool
	ackNeeded    bool
	sackCursor   int
	ackNow       bool
	relayTo      *Stream
	relayedBy    map[*Stream]struct{}
	// relayHeld holds packets relayed before relayTo was connected (see
	// relay); they go out when it connects.
	relayHeld [][]byte

	heapIdx     int
	wakeAt      int64
	dirty       bool // in u.dirty; guarded by u.mu
	touchedMark bool
	rxq         [][]byte // delivered this iteration, for publishRx
	rxqBytes    int64
	stats       Stats

	// ---- shared with user goroutines ----
	mu      sync.Mutex
	wq      [][]byte
	wqOff   int
	wqBytes atomic.Int64
	// notsentMax bounds wqBytes for Write (TCP_NOTSENT_LOWAT): bytes
	// written but not yet in packets. The loop keeps it at
	// notsentLimit(pacingRate).
	notsentMax atomic.Int64
	// wblocked is set while a Write holds data that the notsent bound
	// keeps out of wq, from when it starts waiting for room until it has
	// queued more; rateCheckAppLimited reads it (see there).
	wblocked   atomic.Bool
	endReq     atomic.Bool
	wclosed    bool
	rq         [][]byte
	rqOff      int
	rqBytes    atomic.Int64 // in rq
	eof        bool
	err        error
	userClosed bool
	msgs       [][]byte
	msgsSpare  [][]byte // msgs' previous array, which ReadMessageBatch gives back
	mq         [][]byte // MESSAGEs for the loop to send (Send)
	mqSpare    [][]byte // loop-owned: mq's previous array, for reuse
	rdl, wdl   time.Time
	wantAck    atomic.Bool
	wantClose  atomic.Bool
	lastAdv    atomic.Uint32
	readable   chan struct{}
	writable   chan struct{}
	msgable    chan struct{}
	done       chan struct{}
	doneOnce   sync.Once
	heardCh    chan struct{} // closed by the loop on the peer's first packet
	sockAddr   atomic.Pointer[netip.AddrPort]
	remAddr    atomic.Pointer[netip.AddrPort]
	// pubMTU is mtu as the loop last set it, for MaxMessage, which user
	// goroutines call per datagram without a trip to the loop.
	pubMTU atomic.Int32
	// authOff is the highest offset Authenticated was given; candOffA is
	// candOff as the loop last set it (-1: nothing to authenticate), so
	// that Authenticated wakes the loop only when it may move the stream.
	authOff  atomic.Int64
	candOffA atomic.Int64
}

const (
	defaultSendBuffer = 4 << 20
	maxQueuedMessages = 1024
	lingerTime        = 30_000_000 // µs a Closed stream waits for the peer's END
	// ackDelay is how long the ACK of a lone in-order DATA packet waits
	// for data of ours to carry it, as TCP's delayed ACK: a request's ACK
	// then rides on the reply instead of costing the peer a packet (and a
	// wake-up) of its own. Senders allow for it: with one packet in
	// flight, libudx's tail-loss probe waits 2·SRTT plus 2 ms
	// (UDX_TLP_MAX_ACK_DELAY), and so does ours; with more in flight we
	// ACK at once (see flush).
	ackDelay = 1_000 // µs
	// Write blocks while more than max(notsentMin, notsentTime of the
	// pacing rate) bytes wait unsent (see notsentLimit).
	notsentMin  = 16 << 10
	notsentTime = 2_000 // µs
)

// notsentLimit is how many written bytes may wait unsent in the queue, like
// Linux's TCP_NOTSENT_LOWAT: 2 ms of sending, at least 16 KiB (a yamux
// frame). Bytes in flight do not count, so the window stays full, but what
// a writer queues ahead of the wire is bounded in time: a small write from
// another user of the stream (another yamux stream of a tunnel) waits
// behind at most that much, rather than behind the whole send buffer. A
// writer with more data blocks and finds room again as packets leave,
// within the pacing. Both bounds were larger (5 ms, 64 KiB): 5 ms in
// front of every small write on a 300 Mbit/s lan, 26 ms at 20 Mbit/s;
// loopback throughput through a tunnel did not need them (it went from
// 286-300 to 360 MB/s with these).
func notsentLimit(pacingRate float64, sendBuffer int) int64 {
	n := max(int64(pacingRate*notsentTime), notsentMin)
	return min(n, int64(sendBuffer))
}

// NewStream creates an unconnected stream with a local id unique within u.
func (u *UDX) NewStream(id uint32, opts *StreamOptions) (*Stream, error) {
	s := &Stream{u: u, id: id, heapIdx: -1,
		readable: make(chan struct{}, 1), writable: make(chan struct{}, 1),
		msgable: make(chan struct{}, 1), done: make(chan struct{}), heardCh: make(chan struct{})}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.RecvWindow == 0 {
		s.opts.RecvWindow = defaultRwndMax
	}
	if s.opts.SendBuffer <= 0 {
		s.opts.SendBuffer = defaultSendBuffer
	}
	if s.opts.MTUMax <= 0 || s.opts.MTUMax > mtuMax {
		s.opts.MTUMax = mtuMax
	}
	if s.opts.MTUMax < mtuBase {
		s.opts.MTUMax = mtuBase
	}
	s.firewall = s.opts.Firewall
	s.candOff = -1
	s.candOffA.Store(-1)
	s.notsentMax.Store(notsentLimit(0, s.opts.SendBuffer))
	s.rwndMax = s.opts.RecvWindow
	s.lastAdv.Store(s.rwndMax)
	s.seq, s.remoteAcked, s.ack = s.opts.Seq, s.opts.Seq, s.opts.Ack
	s.wl1, s.wl2 = 0, 0
	s.sendRwnd = defaultRwndMax
	s.cwnd = initialCwnd
	s.rto = rtoMin
	s.caState = caOpen
	s.highSeq = s.seq
	s.rackFack = s.seq
	s.rackNextSeq = s.seq
	s.blockStore = make([]SACKBlock, 0, 64)
	s.blocks = s.blockStore
	s.resetMTU()
	err := u.do(func(now int64) error {
		if _, ok := u.streams[id]; ok {
			return ErrIDInUse
		}
		u.streams[id] = s
		s.registered = true
		s.bbrInit(now)
		s.tbLast = now
		s.tokens = 25000
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Stream) resetMTU() {
	s.mtu, s.probeSize, s.mtuMax = mtuBase, mtuBase, s.opts.MTUMax
	s.pubMTU.Store(int32(s.mtu))
	s.mtuState = mtuStateBase
	s.probeWanted = false
	s.probeCount = 0
	if s.mtuMax <= mtuBase {
		s.mtuState = mtuStateSearchComplete
	}
}

// ID is the local stream id (what the peer puts in its packets).
func (s *Stream) ID() uint32 { return s.id }

// Connect sets the peer's stream id and address and the socket to use. No
// packet is sent: the first packet on the wire is the first write.
func (s *Stream) Connect(sock *Socket, remoteID uint32, addr netip.AddrPort) error {
	if sock.u != s.u {
		return &StreamError{ID: s.id, Err: ErrClosed}
	}
	return s.u.do(func(now int64) error {
		if s.dead {
			return s.deadErr()
		}
		if s.connected {
			return ErrAlreadyConnected
		}
		s.connectLocked(sock, remoteID, addr, now)
		return nil
	})
}

// maxHeld bounds the packets a stream holds for FirewallHold.
const maxHeld = 32

type heldPacket struct {
	sock *Socket
	from netip.AddrPort
	raw  []byte
}

// replayHeldLocked feeds the held packets that came from the address the
// stream just connected to; the others are dropped.
func (s *Stream) replayHeldLocked(now int64) {
	held := s.held
	s.held = nil
	var sacks [64]SACKBlock
	for _, h := range held {
		if s.dead || h.sock != s.sock || !sameAddrPort(h.from, s.raddr) {
			continue
		}
		p, err := DecodePacket(h.raw, sacks[:0])
		if err != nil {
			continue
		}
		s.onPacket(h.raw, &p, now)
	}
}

func (s *Stream) connectLocked(sock *Socket, remoteID uint32, addr netip.AddrPort, now int64) {
	defer s.replayHeldLocked(now)
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if sock.ipv6 && addr.Addr().Is4() {
		// A dual-stack socket stores v4 peers v4-mapped, and libudx then
		// sizes packets with the IPv6 overhead; do the same.
		addr = netip.AddrPortFrom(netip.AddrFrom16(addr.Addr().As16()), addr.Port())
	}
	s.dropCandidate()
	s.sock = sock
	s.remoteID = remoteID
	s.raddr = addr
	s.ruaddr = net.UDPAddrFromAddrPort(addr)
	s.connected = true
	la := sock.localAddrPort()
	s.sockAddr.Store(&la)
	s.remAddr.Store(&addr)
	if s.opts.Ack != 0 && s.ack == 0 {
		s.ack = s.opts.Ack
	}
	s.resetMTU()
	if s.mtuMax > mtuBase {
		if pm := sock.pathMTU(addr); pm > 0 && pm < s.mtuMax {
			s.mtuMax = pm
		}
		if s.mtuMax <= mtuBase {
			s.mtuState = mtuStateSearchComplete
		}
	}
	if s.keepalive > 0 && s.seq == s.remoteAcked {
		s.startTimer(timerKeepalive, s.keepalive, now)
	}
	s.u.touch(s)
}

// ChangeRemote moves the stream to a new socket, peer id and address
// (connection migration). Packets already sent keep their old destination.
// The returned channel closes when everything sent before the change is
// acknowledged.
func (s *Stream) ChangeRemote(sock *Socket, remoteID uint32, addr netip.AddrPort) (<-chan struct{}, error) {
	ch := make(chan struct{})
	err := s.u.do(func(now int64) error {
		if s.dead {
			return s.deadErr()
		}
		if !s.connected {
			return ErrNotConnected
		}
		if s.remoteChanging {
			return ErrRemoteChanging
		}
		seq, ack, ka := s.seq, s.ack, s.keepalive
		s.connected = false
		s.connectLocked(sock, remoteID, addr, now)
		s.seq, s.ack, s.keepalive = seq, ack, ka
		s.remoteChangedCh = ch
		s.pathCh, s.pathOK = make(chan struct{}), false
		if s.seq == s.remoteAcked {
			s.signalRemoteChanged()
		} else {
			s.remoteChanging = true
			s.seqOnRemoteChanged = s.seq
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ch, nil
}

// Heard returns a channel that closes when the first packet from the peer
// arrives: until then the peer may never have opened its side at all (a
// client that only half-dialed, or gave up).
func (s *Stream) Heard() <-chan struct{} { return s.heardCh }

// PathConfirmed returns a channel that closes once a packet has arrived
// from the remote (socket and address) set by the last ChangeRemote: the
// peer sends on the new path too, so whatever carried the old one (a
// relay) can go. Nil before any ChangeRemote.
func (s *Stream) PathConfirmed() <-chan struct{} {
	var ch chan struct{}
	_ = s.u.do(func(int64) error {
		ch = s.pathCh
		return nil
	})
	return ch
}

// notePathLocked closes pathCh when a packet came from the current remote.
func (s *Stream) notePathLocked(sk *Socket, from netip.AddrPort) {
	if s.pathCh != nil && !s.pathOK && sk == s.sock && sameAddrPort(from, s.raddr) {
		s.pathOK = true
		close(s.pathCh)
	}
}

// sameAddrPort compares two addresses ignoring v4-mapping.
func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

func (s *Stream) signalRemoteChanged() {
	if s.remoteChangedCh != nil {
		close(s.remoteChangedCh)
		s.remoteChangedCh = nil
	}
}

// RelayTo forwards every packet arriving for s to dst's peer, rewriting
// only the id (libudx relay_to); s itself then neither acks nor delivers.
func (s *Stream) RelayTo(dst *Stream) error {
	return s.u.do(func(now int64) error {
		if s.dead {
			return s.deadErr()
		}
		if dst.dead {
			return dst.deadErr()
		}
		s.relayTo = dst
		if dst.relayedBy == nil {
			dst.relayedBy = map[*Stream]struct{}{}
		}
		dst.relayedBy[s] = struct{}{}
		return nil
	})
}

// SetKeepalive sends a HEARTBEAT every d while nothing is outstanding
// (0 disables).
func (s *Stream) SetKeepalive(d time.Duration) error {
	return s.u.do(func(now int64) error {
		if s.dead {
			return s.deadErr()
		}
		s.keepalive = d.Microseconds()
		if s.connected && s.seq == s.remoteAcked && (s.timer == timerNone || s.timer == timerKeepalive) {
			s.idleTimer(now)
			s.u.touch(s)
		}
		return nil
	})
}

// SetRTTHint tells a stream with no round-trip sample yet what its path's
// round trip probably is: the time the handshake that set it up took, say.
// Until its first sample the stream uses the hint only to time its tail
// loss probe, so that a lost first packet (a dial's first handshake
// message) is sent again after about two hints instead of after libudx's
// 1 s initial RTO, which still applies to everything else, as pacing
// still assumes libudx's 1 ms. A hint of 1 s or more could only delay
// what the RTO does anyway, and is ignored, as is a hint once the stream
// has measured its path.
func (s *Stream) SetRTTHint(d time.Duration) error {
	return s.u.do(func(now int64) error {
		if s.dead {
			return s.deadErr()
		}
		s.hintLocked(d.Microseconds(), now)
		return nil
	})
}

// HintRTTFromPeer is SetRTTHint for a stream that sends first and whose
// peer speaks once it has heard from us, or from a handshake answer sent
// when our first packet was: when the peer's first packet arrives before
// any of ours is acknowledged (ours was lost), the time since our first
// packet left is the hint.
func (s *Stream) HintRTTFromPeer() error {
	return s.u.do(func(int64) error {
		if s.dead {
			return s.deadErr()
		}
		s.hintFromPeer = true
		return nil
	})
}

// hintFromPeerLocked applies HintRTTFromPeer on the peer's first packet.
func (s *Stream) hintFromPeerLocked(now int64) {
	s.hintFromPeer = false
	if s.seq == s.remoteAcked {
		return
	}
	if p := s.out.get(s.remoteAcked); p != nil {
		s.hintLocked(max(now-p.sentFirst, 1), now)
	}
}

// hintLocked sets the RTT hint (us) unless the stream has a sample or a
// hint already, or us could not help (see SetRTTHint).
func (s *Stream) hintLocked(us, now int64) {
	if s.srtt != 0 || s.rttHint != 0 || us <= 0 || us >= rtoMin {
		return
	}
	s.rttHint = us
	s.tlpPermitted = true
	// Data already out waits on a timer set without the hint: re-time it
	// (scheduleLossProbe declines what a probe could not help).
	if s.connected && (s.timer == timerRTO || s.timer == timerTLP) && s.scheduleLossProbe(now, false) {
		s.u.touch(s)
	}
}

// SetTimeout changes StreamOptions.Timeout.
func (s *Stream) SetTimeout(d time.Duration) error {
	return s.u.do(func(int64) error {
		if s.dead {
			return s.deadErr()
		}
		s.opts.Timeout = d
		return nil
	})
}

// Send transmits p as one unreliable MESSAGE datagram on the stream. It
// does not wait for the loop: p is copied into a queue of at most
// maxQueuedMessages that the loop sends on its next turn, in one batch
// with whatever else is queued (a round trip to the loop per datagram
// would cap a stream at the loop's wake-ups per second). A datagram that
// finds the queue full is dropped with ErrWouldBlock, as a full socket
// buffer drops it.
func (s *Stream) Send(p []byte) error {
	if len(p)+HeaderSize > recvBufferSize {
		return ErrMessageTooLarge
	}
	if s.isDone() {
		if err := s.Err(); err != nil {
			return err
		}
		return &StreamError{ID: s.id, Err: ErrClosed}
	}
	if s.remAddr.Load() == nil {
		return ErrNotConnected
	}
	s.mu.Lock()
	if len(s.mq) >= maxQueuedMessages {
		s.mu.Unlock()
		return ErrWouldBlock
	}
	// A pooled buffer (p fits, as recvBufferSize is pktBufSize), which
	// sendMessages gives back: at 100k datagrams a second a fresh one
	// each would keep the collector busy.
	b := getPktBuf()[:len(p)]
	copy(b, p)
	s.mq = append(s.mq, b)
	s.mu.Unlock()
	s.u.kickStream(s)
	return nil
}

// sendMessages puts the MESSAGEs Send queued on the wire; it runs on the
// loop.
func (s *Stream) sendMessages() {
	s.mu.Lock()
	mq := s.mq
	s.mq = s.mqSpare[:0]
	s.mu.Unlock()
	for i, b := range mq {
		if s.connected && !s.dead {
			h := s.header(FlagMessage)
			buf := s.sock.scratch(HeaderSize + len(b))
			h.Put(buf)
			copy(buf[HeaderSize:], b)
			s.sock.queue(buf, s.ruaddr, s.raddr)
		}
		putPktBuf(b)
		mq[i] = nil
	}
	s.mqSpare = mq[:0]
}

// TrySend is Send; MESSAGEs are never queued behind stream data, so there
// is nothing to wait for.
func (s *Stream) TrySend(p []byte) error { return s.Send(p) }

// MaxMessage is the largest payload Send can put in one packet on the
// current path: the path MTU found so far (1200 bytes until probing
// raises it, up to 1500) less the IP, UDP and udx headers. Larger
// payloads would leave as IP fragments or, with the don't-fragment bit
// udx sets for its probes, not at all. 0 before Connect.
func (s *Stream) MaxMessage() int {
	a := s.remAddr.Load()
	if a == nil {
		return 0
	}
	if a.Addr().Is4() { // as maxPayload
		return int(s.pubMTU.Load()) - 48
	}
	return int(s.pubMTU.Load()) - 68
}

// ReadMessage returns the next MESSAGE payload received on the stream.
func (s *Stream) ReadMessage(ctx context.Context) ([]byte, error) {
	for {
		s.mu.Lock()
		if len(s.msgs) > 0 {
			m := s.msgs[0]
			s.msgs[0] = nil
			s.msgs = s.msgs[1:]
			s.mu.Unlock()
			return m, nil
		}
		if err := s.waitMessagesLocked(ctx); err != nil {
			return nil, err
		}
	}
}

// ReadMessageBatch waits for MESSAGEs and calls each with every one
// queued by then, in the order they arrived. A payload is valid only
// during its call: its buffer goes back to a pool, so that a stream
// receiving datagrams at a high rate allocates nothing per datagram (as
// ReadMessage must), and one wake-up of the reader takes a burst.
func (s *Stream) ReadMessageBatch(ctx context.Context, each func(p []byte)) error {
	for {
		s.mu.Lock()
		if len(s.msgs) > 0 {
			ms := s.msgs
			s.msgs = s.msgsSpare[:0]
			s.msgsSpare = nil
			s.mu.Unlock()
			for i, m := range ms {
				each(m)
				putPktBuf(m)
				ms[i] = nil
			}
			s.mu.Lock()
			if s.msgsSpare == nil {
				s.msgsSpare = ms[:0]
			}
			s.mu.Unlock()
			return nil
		}
		if err := s.waitMessagesLocked(ctx); err != nil {
			return err
		}
	}
}

// waitMessagesLocked, called with s.mu held and no MESSAGE queued,
// unlocks it and waits for one, the stream's end or ctx's.
func (s *Stream) waitMessagesLocked(ctx context.Context) error {
	err := s.err
	if err == nil && s.isDone() {
		err = ErrClosed
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-s.msgable:
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (s *Stream) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// wait blocks until c is signalled, the stream finishes, or the deadline.
func (s *Stream) wait(c chan struct{}, dl time.Time) error {
	if dl.IsZero() {
		select {
		case <-c:
		case <-s.done:
		}
		return nil
	}
	d := time.Until(dl)
	if d <= 0 {
		return errDeadline
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c:
	case <-s.done:
	case <-t.C:
	}
	return nil
}

// Read reads stream data; io.EOF after the peer's END.
func (s *Stream) Read(p []byte) (int, error) {
	for {
		s.mu.Lock()
		if s.userClosed {
			s.mu.Unlock()
			return 0, net.ErrClosed
		}
		if len(s.rq) > 0 {
			n := 0
			for n < len(p) && len(s.rq) > 0 {
				c := s.rq[0][s.rqOff:]
				k := copy(p[n:], c)
				n += k
				s.rqOff += k
				if s.rqOff == len(s.rq[0]) {
					putPktBuf(s.rq[0])
					s.rq[0] = nil
					s.rq = s.rq[1:]
					s.rqOff = 0
				}
			}
			s.mu.Unlock()
			left := s.rqBytes.Add(-int64(n))
			// Reopen a window the peer saw (nearly) closed at once instead
			// of waiting for its zero-window probe.
			if adv := s.lastAdv.Load(); adv < s.rwndMax/2 && left < int64(s.rwndMax/2) {
				if !s.wantAck.Swap(true) {
					s.u.kickStream(s)
				}
			}
			return n, nil
		}
		if s.eof {
			s.mu.Unlock()
			return 0, io.EOF
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		if s.isDone() {
			s.mu.Unlock()
			return 0, io.EOF
		}
		dl := s.rdl
		s.mu.Unlock()
		if err := s.wait(s.readable, dl); err != nil {
			return 0, err
		}
	}
}

// Write queues p for sending; it blocks while the bytes queued and not yet
// sent exceed the stream's not-sent limit (a few ms of its pacing rate, at
// least 16 KiB, at most StreamOptions.SendBuffer).
func (s *Stream) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return n, err
		}
		if s.wclosed || s.userClosed {
			s.mu.Unlock()
			return n, ErrWriteClosed
		}
		if s.isDone() {
			s.mu.Unlock()
			return n, &StreamError{ID: s.id, Err: ErrClosed}
		}
		// Wait for half the limit to be free (or room for the rest of
		// p): topping the queue up one packet at a time would wake the
		// writer for every packet the loop takes.
		limit := s.notsentMax.Load()
		room := int(limit - s.wqBytes.Load())
		if room <= 0 || room < min(int(limit/2), len(p)-n) {
			dl := s.wdl
			s.wblocked.Store(true)
			s.mu.Unlock()
			if err := s.wait(s.writable, dl); err != nil {
				s.wblocked.Store(false)
				return n, err
			}
			continue
		}
		k := min(room, len(p)-n)
		for end := n + k; n < end; {
			// Fill the last chunk's room, then new ones from the pool:
			// a fresh slice per Write made the garbage collector and
			// its scavenger a tenth of a sending tunnel's CPU time.
			last := len(s.wq) - 1
			if last < 0 || len(s.wq[last]) == cap(s.wq[last]) {
				s.wq = append(s.wq, wqPool.Get().(*[wqChunkSize]byte)[:0])
				last++
			}
			c := s.wq[last]
			m := copy(c[len(c):cap(c)], p[n:end])
			s.wq[last] = c[:len(c)+m]
			n += m
		}
		s.wqBytes.Add(int64(k))
		s.wblocked.Store(false)
		s.mu.Unlock()
		s.u.kickStream(s)
	}
	return n, nil
}

// wqLen is the number of written bytes not yet packed into packets.
func (s *Stream) wqLen() int { return int(s.wqBytes.Load()) }

// takeWrite moves up to len(dst) queued bytes into dst; end reports that
// the END flag belongs on this packet.
func (s *Stream) takeWrite(dst []byte) (int, bool) {
	s.mu.Lock()
	n := 0
	for n < len(dst) && len(s.wq) > 0 {
		c := s.wq[0][s.wqOff:]
		k := copy(dst[n:], c)
		n += k
		s.wqOff += k
		if s.wqOff == len(s.wq[0]) {
			wqPool.Put((*[wqChunkSize]byte)(s.wq[0][:wqChunkSize]))
			s.wq[0] = nil
			s.wq = s.wq[1:]
			s.wqOff = 0
		}
	}
	left := s.wqBytes.Add(-int64(n))
	// END goes in a packet of its own, after the last data. libudx acks
	// every packet, so the data is confirmed by an ack of its own and a
	// lost final ack leaves only the END in doubt (see endGiveUpRTOs).
	end := n == 0 && len(s.wq) == 0 && s.endReq.Load()
	s.mu.Unlock()
	if n > 0 && left <= s.notsentMax.Load()/2 {
		signal(s.writable)
	}
	return n, end
}

// CloseWrite sends END after the queued data (half-close).
func (s *Stream) CloseWrite() error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	s.wclosed = true
	s.mu.Unlock()
	s.endReq.Store(true)
	s.u.kickStream(s)
	return nil
}

// Close ends the write side and releases the read side. The stream keeps
// running in the background until the peer has acknowledged everything and
// ended too (or for 30 s at most, then it is destroyed).
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.userClosed {
		s.mu.Unlock()
		return nil
	}
	s.userClosed = true
	s.wclosed = true
	for _, c := range s.rq {
		putPktBuf(c)
	}
	s.rq = nil
	s.rqBytes.Store(0)
	s.mu.Unlock()
	signal(s.readable)
	signal(s.writable)
	s.endReq.Store(true)
	s.wantClose.Store(true)
	s.u.kickStream(s)
	return nil
}

// Destroy closes the stream abortively: a DESTROY packet is sent if it is
// connected (libudx udx_stream_destroy).
func (s *Stream) Destroy() error {
	err := s.u.do(func(now int64) error {
		if !s.dead {
			s.destroy(ErrDestroyed)
		}
		return nil
	})
	if err != nil {
		return err
	}
	<-s.done
	return nil
}

// Done is closed when the stream has finished, for whatever reason.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err is why the stream finished: nil for a graceful close, else a
// *StreamError wrapping ErrReset, ErrTimeout, ErrDestroyed or ErrClosed.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Stats returns a snapshot of the stream's counters.
func (s *Stream) Stats() Stats {
	var st Stats
	_ = s.u.do(func(int64) error {
		st = s.stats
		st.RTT = time.Duration(s.srtt) * time.Microsecond
		st.Cwnd = s.cwnd
		st.MTU = s.mtu
		return nil
	})
	return st
}

// RTT is the smoothed round-trip time, 0 before the first sample.
func (s *Stream) RTT() time.Duration { return s.Stats().RTT }

func (s *Stream) LocalAddr() net.Addr {
	if a := s.sockAddr.Load(); a != nil {
		return net.UDPAddrFromAddrPort(*a)
	}
	return &net.UDPAddr{}
}

func (s *Stream) RemoteAddr() net.Addr {
	if a := s.remAddr.Load(); a != nil {
		return net.UDPAddrFromAddrPort(*a)
	}
	return &net.UDPAddr{}
}

func (s *Stream) SetDeadline(t time.Time) error {
	s.mu.Lock()
	s.rdl, s.wdl = t, t
	s.mu.Unlock()
	signal(s.readable)
	signal(s.writable)
	return nil
}

func (s *Stream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.rdl = t
	s.mu.Unlock()
	signal(s.readable)
	return nil
}

func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.mu.Lock()
	s.wdl = t
	s.mu.Unlock()
	signal(s.writable)
	return nil
}

// ---- loop side helpers that touch shared state ----

// deliver queues a copy of payload for the reader; publishRx hands it over.
func (s *Stream) deliver(payload []byte) {
	if len(payload) == 0 {
		return
	}
	b := getPktBuf()[:len(payload)]
	copy(b, payload)
	s.deliverBuf(b)
}

// deliverBuf is deliver for a packet buffer the stream owns, which goes to
// the reader as it is.
func (s *Stream) deliverBuf(b []byte) {
	s.rxOff += int64(len(b))
	s.rxq = append(s.rxq, b)
	s.rxqBytes += int64(len(b))
}

// publishRx moves what deliver queued to the reader: once per loop
// iteration rather than once per packet, because the lock and the byte
// count it shares with the reader's goroutine cost a cache-line transfer
// between cores each time (5% of a receiving tunnel's CPU, perf).
func (s *Stream) publishRx() {
	if len(s.rxq) == 0 {
		return
	}
	s.mu.Lock()
	if s.userClosed {
		for _, b := range s.rxq {
			putPktBuf(b)
		}
	} else {
		s.rq = append(s.rq, s.rxq...)
		s.rqBytes.Add(s.rxqBytes)
	}
	s.mu.Unlock()
	clear(s.rxq)
	s.rxq, s.rxqBytes = s.rxq[:0], 0
	signal(s.readable)
}

func (s *Stream) deliverEOF() {
	s.publishRx()
	s.mu.Lock()
	s.eof = true
	s.mu.Unlock()
	signal(s.readable)
}

func (s *Stream) deliverMessage(p []byte) {
	s.mu.Lock()
	if len(s.msgs) < maxQueuedMessages {
		// Pooled, which ReadMessageBatch gives back; a datagram larger
		// than a pool buffer (a peer's jumbo MESSAGE, read whole with
		// GRO) gets its own.
		var b []byte
		if len(p) <= pktBufSize {
			b = getPktBuf()[:len(p)]
		} else {
			b = make([]byte, len(p))
		}
		copy(b, p)
		s.msgs = append(s.msgs, b)
	}
	s.mu.Unlock()
	signal(s.msgable)
}

func (s *Stream) deadErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	return &StreamError{ID: s.id, Err: ErrClosed}
}

// destroy is udx_stream_destroy: DESTROY goes out only on a connected,
// non-relaying stream; seq is incremented after it, as libudx does.
func (s *Stream) destroy(why error) {
	if s.dead {
		return
	}
	if s.connected && s.relayTo == nil && s.sock != nil {
		s.sendCtl(FlagDestroy)
		s.seq++
	}
	s.finish(why)
}

// finish closes the stream locally with err (nil: graceful).
func (s *Stream) finish(err error) {
	if s.dead {
		return
	}
	s.publishRx()
	s.dead = true
	if s.registered {
		if cur := s.u.streams[s.id]; cur == s {
			delete(s.u.streams, s.id)
		}
	}
	s.timer, s.timerAt, s.paceAt, s.lingerAt, s.stallAt = timerNone, 0, 0, 0, 0
	s.onStall = nil
	s.u.unschedule(s)
	for p := s.inflight.head; p != nil; p = p.next {
		putPktBuf(p.buf)
	}
	for p := s.retrans.head; p != nil; p = p.next {
		putPktBuf(p.buf)
	}
	s.inflight, s.retrans, s.out, s.freePkts = pktList{}, pktList{}, outRing{}, nil
	for i, b := range s.ooo {
		if len(b) > 0 {
			putPktBuf(b)
		}
		s.ooo[i] = nil
	}
	s.ooo = nil
	s.blocks = nil
	s.relayHeld = nil
	if s.relayTo != nil {
		delete(s.relayTo.relayedBy, s)
	}
	for r := range s.relayedBy {
		r.relayTo = nil
		r.finish(ErrReset)
	}
	s.signalRemoteChanged()
	s.mu.Lock()
	if err != nil && s.err == nil {
		s.err = &StreamError{ID: s.id, Err: err}
	}
	s.mu.Unlock()
	s.doneOnce.Do(func() { close(s.done) })
	signal(s.readable)
	signal(s.writable)
	signal(s.msgable)
}

// service runs on the loop for a stream that user code poked.
func (s *Stream) service(now int64) {
	if s.dead {
		return
	}
	s.sendMessages()
	if s.candOff >= 0 && s.authOff.Load() > s.candOff {
		s.roamLocked(now)
	}
	if s.wantAck.Swap(false) {
		s.ackNeeded = true
		s.ackNow = true
	}
	if s.wantClose.Swap(false) {
		if !s.connected {
			s.finish(ErrClosed)
			return
		}
		if s.lingerAt == 0 {
			s.lingerAt = now + lingerTime
		}
	}
}

// flush sends what the stream owes: retransmissions, new data, an ACK.
// Data packets carry our ack and window, so an ACK goes out on its own only
// if no data did, or SACK blocks must be reported; and one owed for a lone
// in-order DATA packet waits up to ackDelay (ackAt) for data to carry it.
func (s *Stream) flush(now int64) {
	s.publishRx()
	if s.dead {
		return
	}
	s.paceAt = 0
	sent := s.sendPackets(now)
	if sent && len(s.blocks) == 0 {
		// Our data packets carried the ack (and the window).
		s.ackNeeded, s.ackNow, s.ackAt, s.unacked = false, false, 0, 0
	}
	if sent {
		s.lastAdv.Store(s.lastRwnd)
	}
	if s.ackNeeded && s.connected {
		if s.ackNow || s.unacked >= 2 || len(s.blocks) > 0 || (s.ackAt != 0 && now >= s.ackAt) {
			s.sendAck(now)
			s.lastAdv.Store(s.lastRwnd)
			s.ackNow, s.ackAt, s.unacked = false, 0, 0
		} else if s.ackAt == 0 {
			s.ackAt = now + ackDelay
		}
	}
	if s.candAck {
		// The candidate's data is acknowledged to it as well (roam.go).
		s.candAck = false
		if s.connected && s.cand.IsValid() {
			s.putAck(s.candU, s.cand)
		}
	}
	if s.dead {
		return
	}
	s.checkRemoteEnded()
}

// SetFirewallRemoteID sets the peer id that a FirewallConnect verdict
// connects to. A hyperdht client learns its server's stream id only from
// the handshake reply, after the stream (and its firewall) exists.
func (s *Stream) SetFirewallRemoteID(id uint32) error {
	return s.u.do(func(int64) error {
		s.opts.RemoteID = id
		return nil
	})
}

// Connected reports whether the stream has a peer.
func (s *Stream) Connected() bool {
	var c bool
	if err := s.u.do(func(int64) error { c = s.connected; return nil }); err != nil {
		return false
	}
	return c
}

// Socket is the socket the stream is connected on (nil before Connect).
func (s *Stream) Socket() *Socket {
	var sk *Socket
	if err := s.u.do(func(int64) error { sk = s.sock; return nil }); err != nil {
		return nil
	}
	return sk
}
