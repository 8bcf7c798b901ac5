package udx

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
)

// Protocol constants from libudx (src/udx.c, include/udx.h). Times are µs.
const (
	mtuBase      = 1200
	mtuMax       = 1500
	mtuStep      = 32
	mtuMaxProbes = 3

	mtuStateBase           = 1
	mtuStateSearch         = 2
	mtuStateSearchComplete = 4

	defaultRwndMax = 4 << 20

	rtoMin         = 1_000_000
	rtoMax         = 30_000_000
	rttMax         = 30_000_000
	rttMinWindow   = 300_000_000
	tlpMaxAckDelay = 2_000
	// A DATA packet of at most eagerCopyMax payload bytes that is alone
	// in flight (a keystroke, an echo, a request) goes out a second time
	// after a quarter of the smoothed RTT, at least eagerCopyMinUs, when
	// no ACK has come by then. See eagerCopy.
	eagerCopyMax   = 512
	eagerCopyMinUs = 2_000
	maxRTOTimeouts = 6
	// endGiveUpRTOs: RTO timeouts an unacked END may see, once the peer
	// has ended too, before the stream closes cleanly (endUnanswered).
	endGiveUpRTOs = 2

	// oooCap bounds how far above ack we store out-of-order packets; a
	// packet further ahead is dropped (the sender retransmits it later).
	oooCap = 8192
	// maxBlocks bounds the receive-side block list under adversarial
	// reordering.
	maxBlocks = 1024
	// outCap bounds the send ring: new data stops when seq-remoteAcked
	// would exceed it.
	outCap = 1 << 16
)

const (
	caOpen     = 1
	caRecovery = 2
	caLoss     = 3
)

type timerKind uint8

const (
	timerNone timerKind = iota
	timerRTO
	timerRackReo
	timerTLP
	timerZWP
	timerKeepalive
	timerEagerCopy
)

// outPkt is a DATA/END packet kept until acknowledged.
type outPkt struct {
	seq         uint32
	buf         []byte // header + padding + payload as it goes on the wire
	padding     int
	sock        *Socket
	uaddr       *net.UDPAddr
	addr        netip.AddrPort
	timeSent    int64
	sentFirst   int64 // when the packet first went out (for StreamOptions.Timeout)
	firstSentTs int64
	deliveredTs int64
	delivered   uint32
	transmits   uint8
	rtoTimeout  uint8
	// retransmitted: ever sent twice; Karn's rule skips its RTT sample.
	retransmitted bool
	appLimited    bool
	lost          bool
	probe         bool
	prev, next    *outPkt
}

// pktList is an intrusive doubly linked list: the inflight queue in send
// order (RACK walks it oldest first) or the retransmit queue.
type pktList struct {
	head, tail *outPkt
	n          int
}

func (l *pktList) push(p *outPkt) {
	p.prev, p.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = p
	} else {
		l.head = p
	}
	l.tail = p
	l.n++
}

func (l *pktList) remove(p *outPkt) {
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		l.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		l.tail = p.prev
	}
	p.prev, p.next = nil, nil
	l.n--
}

// outRing maps seq → *outPkt for seqs in [remoteAcked, seq).
type outRing struct {
	b    []*outPkt
	mask uint32
}

func (r *outRing) get(seq uint32) *outPkt {
	if r.b == nil {
		return nil
	}
	p := r.b[seq&r.mask]
	if p != nil && p.seq == seq {
		return p
	}
	return nil
}

func (r *outRing) set(p *outPkt, span uint32) {
	if r.b == nil || span >= uint32(len(r.b)) {
		n := 64
		for uint32(n) <= span {
			n *= 2
		}
		nb := make([]*outPkt, n)
		for _, q := range r.b {
			if q != nil {
				nb[q.seq&uint32(n-1)] = q
			}
		}
		r.b, r.mask = nb, uint32(n-1)
	}
	r.b[p.seq&r.mask] = p
}

func (r *outRing) del(seq uint32) *outPkt {
	p := r.get(seq)
	if p != nil {
		r.b[seq&r.mask] = nil
	}
	return p
}

func (s *Stream) rttMinUs() int64 {
	if !s.rttMinSet {
		return 0
	}
	return int64(s.rttMin.get())
}

func (s *Stream) recvRwnd() uint32 {
	b := s.rqBytes.Load() + s.rxqBytes
	if b >= int64(s.rwndMax) {
		return 0
	}
	return s.rwndMax - uint32(b)
}

// header builds the header for a packet sent now with the given type.
func (s *Stream) header(typ uint8) Header {
	return Header{Type: typ, ID: s.remoteID, RWnd: s.recvRwnd(), Seq: s.seq, Ack: s.ack}
}

func (s *Stream) sendCtl(typ uint8) {
	if s.sock == nil {
		return
	}
	h := s.header(typ)
	b := s.sock.scratch(HeaderSize)
	h.Put(b)
	s.sock.queue(b, s.ruaddr, s.raddr)
}

// sendAck sends an ACK, with SACK blocks when out-of-order data is held.
// Body: n × {start u32 LE, end u32 LE}, ascending, half-open, at most 50.
//
// libudx reports the 50 blocks nearest ack. Under heavy loss a receiver can
// hold far more, and blocks never reported look lost to a RACK sender as
// soon as a later retransmission is acknowledged, so it resends data we
// already have. We always report the block nearest ack and rotate the other
// 49 slots through the remaining blocks, so every block reaches the sender
// within a few ACKs. Senders process each block on its own, so this is
// compatible with libudx.
func (s *Stream) sendAck(now int64) {
	s.ackNeeded = false
	if s.sock == nil {
		return
	}
	h := s.putAck(s.ruaddr, s.raddr)
	s.lastRwnd = h.RWnd
	s.checkRemoteEnded()
}

// putAck queues an ACK to addr, with SACK blocks when out-of-order data
// is held (see sendAck), and returns its header.
func (s *Stream) putAck(uaddr *net.UDPAddr, addr netip.AddrPort) Header {
	total := len(s.blocks)
	nb := min(total, MaxSACKBlocks)
	typ := uint8(0)
	if nb > 0 {
		typ = FlagSACK
	}
	h := s.header(typ)
	b := s.sock.scratch(HeaderSize + 8*nb)
	h.Put(b)
	put := func(k int, blk SACKBlock) {
		binary.LittleEndian.PutUint32(b[HeaderSize+8*k:], blk.Start)
		binary.LittleEndian.PutUint32(b[HeaderSize+8*k+4:], blk.End)
	}
	if total <= MaxSACKBlocks {
		for i := 0; i < nb; i++ {
			put(i, s.blocks[i])
		}
	} else {
		rest := total - 1
		c := s.sackCursor % rest // window [c, c+49) over blocks[1:], cyclic
		end := c + MaxSACKBlocks - 1
		k := 0
		put(k, s.blocks[0])
		k++
		if end > rest { // wrapped part first to keep ascending order
			for i := 0; i < end-rest; i++ {
				put(k, s.blocks[1+i])
				k++
			}
			end = rest
		}
		for i := c; i < end; i++ {
			put(k, s.blocks[1+i])
			k++
		}
		s.sackCursor = (c + MaxSACKBlocks - 1) % rest
	}
	s.sock.queue(b, uaddr, addr)
	return h
}

// checkRemoteEnded delivers EOF once ack has passed the remote END and
// closes the stream when both directions are done; libudx does this right
// after sending the ACK that covers the END.
func (s *Stream) checkRemoteEnded() {
	if s.remoteEnding && !s.endedRemote && seqDiff(s.ack, s.remoteEnded) > 0 {
		s.endedRemote = true
		s.deliverEOF()
	}
	if s.endedRemote && s.localEnded && !s.dead {
		s.finish(nil)
	}
}

func (s *Stream) sendWindowPackets() uint32 {
	if s.sendRwnd == 0 {
		return 0
	}
	w := max(s.sendRwnd/uint32(s.maxPayload()), 1)
	return min(s.cwnd, w)
}

func (s *Stream) refill(now int64) {
	if now > s.tbLast {
		// Burst cap: 2 ms of sending or 16 packets, whichever is more; libudx
		// refills a whole elapsed-ms worth at 1 ms granularity.
		cap := max(s.pacingRate*2000, float64(16*mtuMax))
		s.tokens = min(s.tokens+s.pacingRate*float64(now-s.tbLast), cap)
		s.tbLast = now
	}
}

func (s *Stream) maySend(now int64, retransmit bool) bool {
	s.refill(now)
	if s.tokens <= 0 {
		if s.paceAt == 0 {
			need := float64(mtuMax) - s.tokens
			d := int64(need / s.pacingRate)
			s.paceAt = now + max(d, 200)
		}
		return false
	}
	if retransmit {
		return uint32(s.inflight.n) < s.cwnd
	}
	return uint32(s.inflight.n) < s.sendWindowPackets()
}

func (s *Stream) transmit(p *outPkt, retransmit bool, now int64) {
	s.rateCheckAppLimited()
	if p.transmits < 255 {
		p.transmits++
	}
	if retransmit {
		p.retransmitted = true
		// Keep seq, id and payload; advertise the current receive state.
		s.lastRwnd = s.recvRwnd()
		binary.LittleEndian.PutUint32(p.buf[8:], s.lastRwnd)
		binary.LittleEndian.PutUint32(p.buf[16:], s.ack)
		if p.sock != s.sock || p.addr != s.raddr {
			// The remote changed since the first send: libudx resends
			// to the old path, which may be a relay that is gone by
			// now. The peer takes the packet on its new path as well.
			binary.LittleEndian.PutUint32(p.buf[4:], s.remoteID)
			p.sock, p.uaddr, p.addr = s.sock, s.ruaddr, s.raddr
		}
	}
	p.timeSent = now
	if !retransmit {
		p.sentFirst = now
	}
	s.ratePktSent(p, now)
	if p.lost {
		s.retrans.remove(p)
		p.lost = false
	}
	s.inflight.push(p)
	p.sock.queue(p.buf, p.uaddr, p.addr)
	s.tokens -= float64(len(p.buf))
	s.stats.PacketsSent++
}

func (s *Stream) retransmitPkt(p *outPkt, now int64) {
	wasEmpty := s.inflight.n == 0
	s.transmit(p, true, now)
	s.stats.Retransmits++
	if wasEmpty {
		s.bbrOnTransmitStart(now)
	}
	s.armTimers(now, false)
}

// sendNewPacket packs queued bytes into one DATA/END packet.
func (s *Stream) sendNewPacket(now int64, tlp bool) bool {
	if !s.connected || s.sock == nil || s.endSent {
		return false
	}
	avail := s.wqLen()
	endNow := s.endReq.Load()
	if avail == 0 && !endNow {
		return false
	}
	if !tlp && !s.maySend(now, false) {
		return false
	}
	if s.seq-s.remoteAcked >= outCap-1 {
		return false
	}
	mp := s.maxPayload()
	buf := getPktBuf()
	buf = buf[:HeaderSize+mp]
	n, end := s.takeWrite(buf[HeaderSize:])
	buf = buf[:HeaderSize+n]
	var typ uint8
	if n > 0 {
		typ |= FlagData
	}
	if end {
		typ |= FlagEnd
		s.endSent = true
	}
	if typ == 0 {
		putPktBuf(buf)
		return false
	}
	h := s.header(typ)
	s.lastRwnd = h.RWnd
	p := s.newPkt()
	p.seq, p.sock, p.uaddr, p.addr = s.seq, s.sock, s.ruaddr, s.raddr
	if s.probeWanted && !tlp && !s.remoteChanging && n > 0 {
		over := 28
		if !s.raddr.Addr().Is4() {
			over = 48
		}
		if pad := s.probeSize - (len(buf) + over); pad >= 0 && pad <= 255 {
			h.DataOffset = uint8(pad)
			p.padding = pad
			p.probe = true
			s.probeWanted = false
			s.probeCount++
			nb := getPktBuf()[:len(buf)+pad]
			copy(nb[HeaderSize+pad:], buf[HeaderSize:])
			clear(nb[HeaderSize : HeaderSize+pad])
			putPktBuf(buf)
			buf = nb
		}
	}
	h.Put(buf)
	p.buf = buf
	wasEmpty := s.inflight.n == 0
	s.out.set(p, s.seq-s.remoteAcked)
	s.transmit(p, false, now)
	s.seq++
	if wasEmpty {
		s.bbrOnTransmitStart(now)
	}
	s.armTimers(now, true)
	if !tlp && s.inflight.n == 1 && s.retrans.n == 0 && n > 0 && n <= eagerCopyMax &&
		s.srtt > 0 && s.caState == caOpen && s.sacks == 0 && s.timer == timerTLP {
		if d := max(s.srtt/4, eagerCopyMinUs); now+d < s.timerAt {
			s.startTimer(timerEagerCopy, d, now)
		}
	}
	return true
}

// eagerCopy sends a lone small packet a second time, a quarter of an RTT
// after the first, unless its ACK came first. An interactive exchange (ssh
// typing, a tunnelled echo, an RPC) has nothing behind its packet to
// reveal a loss, so a lost one waited for the tail loss probe, two RTTs
// later: on a link losing 3 % in bursts, a tenth of a tunnel's echoes
// took over 3 RTT (p95 3.1 in a WAN run). The copy costs one small
// datagram per exchange; a burst that takes both copies, sent a quarter
// RTT apart, is rare, and the loss probe still follows. It is neither a
// retransmission in the packet's state (so its ACK still gives an RTT
// sample, a quarter RTT too long at most, when only the copy arrived) nor
// in the stream's statistics. The receiver takes it as any duplicate, as a
// libudx peer takes a spurious retransmission.
func (s *Stream) eagerCopy(now int64) {
	if s.seq == s.remoteAcked {
		s.idleTimer(now)
		return
	}
	if p := s.out.get(s.seq - 1); p != nil && !p.lost && s.inflight.n == 1 && p.sock != nil {
		p.sock.queue(p.buf, p.uaddr, p.addr)
		s.stats.PacketsSent++
	}
	if !s.scheduleLossProbe(now, false) {
		s.rearmRTO(now, false)
	}
}

// maxFreePkts bounds the records a stream keeps for reuse: a bulk stream
// sends one per datagram, some 900,000 a GiB, and allocating each was
// most of a sender's garbage; what one ack frees is at most a window.
const maxFreePkts = 1024

// newPkt returns a zeroed record for a packet about to be sent.
func (s *Stream) newPkt() *outPkt {
	if n := len(s.freePkts); n > 0 {
		p := s.freePkts[n-1]
		s.freePkts[n-1] = nil
		s.freePkts = s.freePkts[:n-1]
		return p
	}
	return new(outPkt)
}

// freePkt keeps an acked packet's record for newPkt; nothing refers to it
// once it has left the send ring and the queues.
func (s *Stream) freePkt(p *outPkt) {
	*p = outPkt{}
	if len(s.freePkts) < maxFreePkts {
		s.freePkts = append(s.freePkts, p)
	}
}

// unprobe strips the padding from a probe declared lost, as libudx does, so
// the retransmission is an ordinary packet.
func (s *Stream) unprobe(p *outPkt) {
	if !p.probe {
		return
	}
	pad := p.padding
	copy(p.buf[HeaderSize:], p.buf[HeaderSize+pad:])
	p.buf = p.buf[:len(p.buf)-pad]
	p.buf[3] = 0
	p.padding = 0
	p.probe = false
	if s.mtuState == mtuStateSearch {
		if s.probeCount >= mtuMaxProbes {
			s.mtuState = mtuStateSearchComplete
		} else {
			s.probeWanted = true
		}
	}
}

func (s *Stream) sendPackets(now int64) bool {
	if !s.connected || s.dead || s.relayTo != nil {
		return false
	}
	sent := false
	for s.retrans.n > 0 && s.maySend(now, true) {
		s.retransmitPkt(s.retrans.head, now)
		sent = true
	}
	for s.sendNewPacket(now, false) {
		sent = true
	}
	s.maybeZWP(now)
	return sent
}

// maybeZWP arms zero-window probing when the peer's window is closed and we
// have something to send while idle.
func (s *Stream) maybeZWP(now int64) {
	if s.sendRwnd != 0 || s.seq != s.remoteAcked || s.timer == timerZWP {
		return
	}
	if s.wqLen() > 0 || (s.endReq.Load() && !s.endSent) {
		s.sendCtl(FlagHeartbeat)
		s.startTimer(timerZWP, s.rto, now)
	}
}

func (s *Stream) startTimer(k timerKind, d int64, now int64) {
	s.timer = k
	s.timerAt = now + max(d, 1)
	if k == timerRTO {
		s.nextRTOAt = s.timerAt
	}
}

func (s *Stream) stopTimer() { s.timer, s.timerAt = timerNone, 0 }

func (s *Stream) armTimers(now int64, tlp bool) {
	if s.timer == timerNone || s.timer == timerZWP || s.timer == timerKeepalive {
		s.startTimer(timerRTO, s.rto, now)
	}
	if tlp && s.caState == caOpen && s.sacks == 0 {
		s.scheduleLossProbe(now, false)
	}
}

func (s *Stream) rearmRTO(now int64, fromNow bool) {
	if s.seq == s.remoteAcked {
		s.idleTimer(now)
		return
	}
	d := s.rto
	if !fromNow {
		d = max(s.nextRTOAt-now, 1)
	}
	s.startTimer(timerRTO, d, now)
	if !fromNow {
		s.nextRTOAt = now + d
	}
}

// idleTimer picks the timer for a stream with nothing outstanding.
func (s *Stream) idleTimer(now int64) {
	if s.keepalive > 0 && s.connected {
		s.startTimer(timerKeepalive, s.keepalive, now)
	} else {
		s.stopTimer()
	}
}

func (s *Stream) scheduleLossProbe(now int64, advancingRTO bool) bool {
	if s.seq == s.remoteAcked || s.caState != caOpen || s.sacks > 0 {
		return false
	}
	timeout := int64(1_000_000)
	rtt := s.srtt
	if rtt == 0 {
		rtt = s.rttHint
	}
	if rtt > 0 {
		timeout = 2 * rtt
		if s.inflight.n+s.retrans.n == 1 {
			timeout += tlpMaxAckDelay
		}
	}
	rtoLeft := s.rto
	if !advancingRTO {
		rtoLeft = max(s.nextRTOAt-now, 1)
	}
	next := s.nextRTOAt
	if advancingRTO {
		next = now + s.rto
	}
	s.startTimer(timerTLP, min(timeout, rtoLeft), now)
	s.nextRTOAt = next
	return true
}

func (s *Stream) reoWnd() int64 {
	if !s.reorderingSeen {
		if s.caState == caRecovery || s.caState == caLoss || s.sacks >= 3 {
			return 0
		}
	}
	return min(s.rttMinUs()/4, s.srtt)
}

// rackDetectLoss marks packets lost by RACK's time rule (RFC 8985 6.2) and
// returns how long until the next one could be declared lost (0: none).
func (s *Stream) rackDetectLoss(now int64) int64 {
	var timeout int64
	reo := s.reoWnd()
	lost, probesLost := 0, 0
	for p := s.inflight.head; p != nil; {
		next := p.next
		if p.timeSent > s.rackTimeSent {
			break
		}
		if rackSentAfter(s.rackTimeSent, s.rackNextSeq, p.timeSent, p.seq+1) {
			remaining := p.timeSent + s.rackRTT + reo - now
			if remaining <= 0 {
				s.markLost(p)
				if p.probe {
					s.unprobe(p)
					probesLost++
				}
				lost++
			} else if remaining > timeout {
				timeout = remaining
			}
		}
		p = next
	}
	if lost > probesLost && s.caState == caOpen {
		s.stats.FastRecoveries++
		s.caState = caRecovery
		s.highSeq = s.seq
		s.tlpInFlight, s.tlpIsRetrans = false, false
	}
	return timeout
}

func (s *Stream) markLost(p *outPkt) {
	p.lost = true
	s.lostCount++
	s.inflight.remove(p)
	s.retrans.push(p)
}

func (s *Stream) onTimer(now int64) {
	if s.lingerAt != 0 && now >= s.lingerAt {
		s.destroy(ErrClosed)
		return
	}
	if s.stallAt != 0 && now >= s.stallAt {
		s.checkStall(now)
	}
	if s.timerAt == 0 || now < s.timerAt {
		return
	}
	k := s.timer
	s.timer, s.timerAt = timerNone, 0
	switch k {
	case timerRTO:
		s.rtoTimeout(now)
	case timerRackReo:
		s.rackDetectLoss(now)
		s.sendPackets(now)
		if s.timer != timerRTO && !s.dead {
			s.rearmRTO(now, false)
		}
	case timerTLP:
		s.tlpTimeout(now)
	case timerEagerCopy:
		s.eagerCopy(now)
	case timerZWP:
		if s.sendRwnd == 0 && s.connected {
			s.sendCtl(FlagHeartbeat)
			s.startTimer(timerZWP, 2*s.rto, now)
		}
	case timerKeepalive:
		if s.seq == s.remoteAcked && s.connected {
			s.sendCtl(FlagHeartbeat)
			s.startTimer(timerKeepalive, s.keepalive, now)
		}
	}
}

func (s *Stream) tlpTimeout(now int64) {
	if s.remoteAcked == s.seq {
		s.idleTimer(now)
		return
	}
	if s.tlpInFlight || !s.tlpPermitted {
		s.timer = timerTLP // rearmRTO(false) expects the interrupted state
		s.rearmRTO(now, false)
		return
	}
	if !s.sendNewPacket(now, true) {
		p := s.out.get(s.seq - 1)
		if p == nil || p.lost {
			s.rearmRTO(now, false)
			return
		}
		s.inflight.remove(p)
		s.retransmitPkt(p, now)
		s.tlpIsRetrans = true
		s.tlpInFlight = true
		s.tlpEndSeq = p.seq
		s.tlpPermitted = false
	}
	if s.srtt == 0 && s.rttHint > 0 && 4*s.rttHint < s.rto {
		// Nothing measured yet, only hinted (SetRTTHint): the first
		// packets and this probe may all be in one burst of loss, and
		// the 1 s RTO would then be all that is left. Probe again,
		// twice as late each time, while that stays well under the
		// RTO; the first ack ends it (a real sample replaces the hint).
		s.rttHint *= 2
		s.tlpInFlight = false
		s.tlpPermitted = true
		if s.scheduleLossProbe(now, true) {
			return
		}
	}
	s.rearmRTO(now, true)
}

func (s *Stream) rtoTimeout(now int64) {
	if s.remoteAcked == s.seq || !s.connected {
		s.idleTimer(now)
		return
	}
	if s.endUnanswered() {
		// Both directions are done but for the ack of our END, and the
		// peer has gone quiet: a libudx peer closes right after sending
		// that ack and never answers again, so when the ack is lost the
		// END would be retransmitted to nobody until ErrTimeout.
		s.finish(nil)
		return
	}
	s.highSeq = s.seq
	s.stats.RTOs++
	s.caState = caLoss
	s.tlpInFlight, s.tlpIsRetrans = false, false
	s.startTimer(timerRTO, 2*s.rto, now)
	reo := s.reoWnd()
	// Rebuild the retransmit queue in seq order, as libudx does.
	for s.retrans.n > 0 {
		p := s.retrans.head
		s.retrans.remove(p)
		p.lost = false
		s.inflight.push(p) // temporarily; re-queued below in seq order
	}
	for seq := s.remoteAcked; seq != s.seq; seq++ {
		p := s.out.get(seq)
		if p == nil {
			continue
		}
		remaining := p.timeSent + s.rackRTT + reo - now
		if p.seq == s.remoteAcked || remaining < 0 {
			if p.rtoTimeout >= maxRTOTimeouts && now-p.sentFirst >= s.opts.Timeout.Microseconds() {
				s.finish(ErrTimeout)
				return
			}
			s.lostCount++
			if p.rtoTimeout < 255 {
				p.rtoTimeout++
			}
			s.unprobe(p)
			s.markLost(p)
		}
	}
	s.bbrOnRTO()
	s.sendPackets(now)
}

// endUnanswered reports whether the only packet the peer has not acked is
// our END, carrying no data, after the peer's own END has been read and
// endGiveUpRTOs retransmissions of ours went unanswered. All data both ways
// is confirmed then; only whether the peer saw our EOF is not, and a peer
// still open would have acked one of the retransmissions.
func (s *Stream) endUnanswered() bool {
	if !s.endedRemote || !s.endSent || s.seq-s.remoteAcked != 1 {
		return false
	}
	p := s.out.get(s.remoteAcked)
	return p != nil && p.rtoTimeout >= endGiveUpRTOs && len(p.buf)-p.padding == HeaderSize
}

func clampRTT(s *Stream, rtt int64) int64 {
	if s.srtt == 0 {
		return min(rtt, rttMax)
	}
	if th := s.srtt + 5*s.rttvar; rtt > th && rtt > 5_000_000 {
		rtt = min(th, rttMax)
	}
	return rtt
}

// ackPacket marks seq delivered: 0 unknown/already, 1 acked, 2 our END is
// now fully acknowledged.
func (s *Stream) ackPacket(seq uint32, sack bool, rs *rateSample, now int64) int {
	p := s.out.del(seq)
	if p == nil {
		if !sack && s.sacks > 0 {
			s.sacks--
		}
		return 0
	}
	if s.mtuState == mtuStateSearch && s.probeCount > 0 && p.probe {
		s.probeCount = 0
		s.mtu = s.probeSize
		s.pubMTU.Store(int32(s.mtu))
		if s.probeSize >= s.mtuMax {
			s.mtuState = mtuStateSearchComplete
		} else {
			s.probeSize = min(s.probeSize+mtuStep, s.mtuMax)
			s.probeWanted = true
		}
	}
	if s.mtuState == mtuStateBase {
		s.mtuState = mtuStateSearch
		s.probeWanted = s.mtuMax > mtuBase
		if !s.probeWanted {
			s.mtuState = mtuStateSearchComplete
		}
	}
	if sack {
		s.sacks++
	}
	if p.lost {
		s.retrans.remove(p)
	} else {
		s.inflight.remove(p)
	}
	s.ratePktDelivered(p, rs)
	rtt := clampRTT(s, now-p.timeSent)
	if !p.retransmitted {
		s.rttMinSet = true
		if s.rttMinInit {
			s.rttMin.runningMin(rttMinWindow, now, float64(rtt))
		} else {
			s.rttMin.reset(now, float64(rtt))
			s.rttMinInit = true
		}
		if s.srtt == 0 {
			s.srtt = max(rtt, 1)
			s.rttvar = rtt / 2
		} else {
			d := rtt - s.srtt
			if d < 0 {
				d = -d
			}
			s.rttvar = (3*s.rttvar + d) / 4
			s.srtt = max((7*s.srtt+rtt)/8, 1)
		}
		s.tlpPermitted = true
		s.rto = min(max(s.srtt+4*s.rttvar, rtoMin), rtoMax)
	}
	next := seq + 1
	if !p.retransmitted || rtt >= s.rttMinUs() {
		s.rackRTT = rtt
		rs.rtt = rtt
		if rackSentAfter(p.timeSent, next, s.rackTimeSent, s.rackNextSeq) {
			s.rackTimeSent = p.timeSent
			s.rackNextSeq = next
		}
	}
	if seqDiff(next, s.rackFack) > 0 {
		s.rackFack = next
	} else if seqDiff(next, s.rackFack) < 0 && !p.retransmitted {
		s.reorderingSeen = true
	}
	putPktBuf(p.buf)
	s.freePkt(p)
	if s.endSent && s.inflight.n == 0 && s.retrans.n == 0 && s.wqLen() == 0 && !s.localEnded {
		s.localEnded = true
		return 2
	}
	return 1
}

// deliverable reports whether in-order data may be accepted: bounded by
// twice the advertised window so a peer ignoring rwnd cannot grow our
// memory without bound.
func (s *Stream) deliverable(n int) bool {
	return s.rqBytes.Load()+s.rxqBytes+int64(n) <= 2*int64(s.rwndMax)+recvBufferSize
}

// processData stores or delivers one DATA/END packet with seq ≥ ack.
func (s *Stream) processData(typ uint8, seq uint32, payload []byte) {
	if seq == s.ack {
		if typ&FlagData != 0 {
			if !s.deliverable(len(payload)) {
				return
			}
			s.noteCandBytes(s.fromCand, len(payload))
			s.deliver(payload)
		}
		s.ack++
		return
	}
	d := seq - s.ack
	if d >= oooCap {
		return
	}
	if s.ooo == nil {
		s.ooo = make([][]byte, oooCap)
	}
	slot := seq & (oooCap - 1)
	if s.ooo[slot] != nil {
		s.stats.Duplicates++
		return // duplicate
	}
	// Find the block to extend or the insertion point; new data usually
	// lands at the tail so scan from the end.
	i := len(s.blocks)
	for i > 0 && seqDiff(s.blocks[i-1].Start, seq) > 0 {
		i--
	}
	// blocks[i-1].Start <= seq (if i>0); seq < blocks[i].Start (if i<len)
	if i > 0 && seqDiff(seq, s.blocks[i-1].End) < 0 {
		s.stats.Duplicates++
		return // inside an existing block: duplicate
	}
	extendPrev := i > 0 && s.blocks[i-1].End == seq
	extendNext := i < len(s.blocks) && s.blocks[i].Start == seq+1
	if !extendPrev && !extendNext && len(s.blocks) >= maxBlocks {
		return
	}
	if len(payload) > 0 || typ&FlagData != 0 {
		b := getPktBuf()[:len(payload)]
		copy(b, payload)
		s.ooo[slot] = b
	} else {
		s.ooo[slot] = emptyPayload
	}
	s.oooTypes[slot] = typ
	if s.fromCand {
		s.oooTypes[slot] |= oooFromCand
	}
	switch {
	case extendPrev && extendNext:
		s.blocks[i-1].End = s.blocks[i].End
		s.blocks = append(s.blocks[:i], s.blocks[i+1:]...)
	case extendPrev:
		s.blocks[i-1].End = seq + 1
	case extendNext:
		s.blocks[i].Start = seq
	default:
		s.blocks = append(s.blocks, SACKBlock{})
		copy(s.blocks[i+1:], s.blocks[i:])
		s.blocks[i] = SACKBlock{Start: seq, End: seq + 1}
	}
}

var emptyPayload = []byte{}

// drainOOO moves the block starting at ack (if any) to the reader.
func (s *Stream) drainOOO() {
	if len(s.blocks) == 0 || s.blocks[0].Start != s.ack {
		return
	}
	blk := s.blocks[0]
	for seq := blk.Start; seq != blk.End; seq++ {
		slot := seq & (oooCap - 1)
		b := s.ooo[slot]
		if s.oooTypes[slot]&FlagData != 0 {
			if !s.deliverable(len(b)) {
				// Reader is far behind: keep the rest stored and stop here.
				s.blocks[0].Start = seq
				return
			}
			if len(b) > 0 {
				s.noteCandBytes(s.oooTypes[slot]&oooFromCand != 0, len(b))
				s.deliverBuf(b)
			}
		} else if len(b) > 0 {
			putPktBuf(b)
		}
		s.ooo[slot] = nil
		s.ack++
	}
	s.blocks = s.blocks[1:]
	if len(s.blocks) == 0 {
		s.blocks = s.blockStore[:0]
	}
}

// onPacket runs libudx's process_packet for a packet addressed to s.
func (s *Stream) onPacket(raw []byte, p *Packet, now int64) {
	s.stats.PacketsReceived++
	if !s.heard {
		s.heard = true
		close(s.heardCh)
	}
	if s.relayTo != nil {
		s.relay(raw, p)
		return
	}
	if p.Type&FlagHeartbeat != 0 {
		s.ackNow = true
		s.ackNeeded = true
		return
	}
	if s.hintFromPeer {
		s.hintFromPeerLocked(now)
	}
	if p.BadOffset {
		return
	}
	prior := s.remoteAcked
	ackAdvanced := seqDiff(p.Ack, prior) > 0
	dataInflight := s.remoteAcked != s.seq

	if p.Type&flagDataOrEnd != 0 && seqDiff(s.ack, p.Seq) > 0 {
		s.stats.Duplicates++
	}
	if p.Type&flagDataOrEnd != 0 && s.fromCand {
		s.candAck = true
	}
	if p.Type&FlagData != 0 && len(p.Payload) > 0 && seqDiff(s.ack, p.Seq) <= 0 {
		s.noteRx(now)
	}
	// Out-of-order data held before this packet: whatever it brings, the
	// sender is waiting for our ACK (RFC 5681's immediate ACK for a packet
	// that fills a gap).
	hadGap := len(s.blocks) > 0
	inOrder := p.Seq == s.ack
	if seqDiff(s.ack, p.Seq) <= 0 {
		if p.Type&flagDataOrEnd != 0 && !s.endedRemote {
			s.processData(p.Type, p.Seq, p.Payload)
		}
		if p.Type&FlagEnd != 0 {
			s.remoteEnding = true
			s.remoteEnded = p.Seq
		}
		if p.Type&FlagDestroy != 0 {
			s.finish(ErrReset)
			return
		}
	}
	if p.Type&flagDataOrEnd != 0 {
		s.ackNeeded = true
		s.unacked++
		// Only a lone in-order DATA packet may wait for a reply to carry
		// its ACK (see flush). A duplicate means our ACK was lost, a gap
		// that one was; the sender's END waits for this ACK to finish.
		if !inOrder || hadGap || p.Type&FlagEnd != 0 {
			s.ackNow = true
		}
	}
	if p.Type&FlagMessage != 0 {
		s.deliverMessage(p.Payload)
	}
	s.drainOOO()

	if seqDiff(s.seq, p.Ack) < 0 {
		return
	}
	if seqDiff(p.Ack, s.remoteAcked) >= 0 {
		if seqDiff(s.wl1, p.Seq) < 0 || (s.wl1 == p.Seq && seqDiff(s.wl2, p.Ack) <= 0) {
			if p.RWnd > 0 && s.timer == timerZWP {
				s.stopTimer()
			}
			s.sendRwnd = p.RWnd
			s.wl1 = p.Seq
			s.wl2 = p.Ack
		}
	}
	if s.remoteChanging && seqDiff(p.Ack, s.seqOnRemoteChanged) >= 0 {
		s.remoteChanging = false
		s.signalRemoteChanged()
	}
	if s.tlpInFlight && seqDiff(p.Ack, s.tlpEndSeq) >= 0 {
		if !s.tlpIsRetrans || seqDiff(p.Ack, s.tlpEndSeq) > 0 {
			s.tlpInFlight = false
		}
	}
	if seqDiff(p.Ack, s.highSeq) > 0 && (s.caState == caRecovery || s.caState == caLoss) {
		// libudx also sets cwnd = ssthresh when leaving RECOVERY; BBR's
		// restore (bbrRecoverOrRestore) already brings cwnd back to the
		// pre-recovery value, and ssthresh may still be the 0xffff
		// placeholder, so that assignment is not copied.
		s.caState = caOpen
	}

	delivered0, lost0 := s.delivered, s.lostCount
	rs := rateSample{rtt: -1}
	ended := false
	for q := prior; seqDiff(q, p.Ack) < 0; q++ {
		a := s.ackPacket(q, false, &rs, now)
		if a == 1 {
			s.delivered++
		}
		if a == 2 {
			s.delivered++
			ended = true
			break
		}
	}
	if ackAdvanced {
		s.remoteAcked = p.Ack
	}
	if ended {
		if s.remoteAcked == s.seq {
			s.idleTimer(now)
		}
		if s.endedRemote {
			s.finish(nil)
			return
		}
		// A final state packet so the peer surely has our ack of its data.
		s.ackNeeded = true
		s.ackNow = true
		return
	}
	for _, b := range p.SACKs {
		if !s.sackValid(b) {
			s.stats.DroppedSACKs++
			continue
		}
		for q := b.Start; q != b.End; q++ {
			a := s.ackPacket(q, true, &rs, now)
			if a == 1 {
				s.delivered++
			}
			if a == 2 {
				s.delivered++
				break
			}
		}
	}
	delivered := s.delivered - delivered0
	lost := s.lostCount - lost0
	armRTOorTLP := ackAdvanced && dataInflight
	if delivered > 0 {
		if s.remoteAcked == s.seq {
			armRTOorTLP = false
			if s.sendRwnd == 0 && (s.wqLen() > 0 || (s.endReq.Load() && !s.endSent)) {
				s.startTimer(timerZWP, s.rto, now)
			} else {
				s.idleTimer(now)
			}
		} else {
			s.nextRTOAt = now + s.rto
		}
		if t := s.rackDetectLoss(now); t > 0 {
			s.startTimer(timerRackReo, t, now)
			armRTOorTLP = false
		}
	}
	if armRTOorTLP {
		if !s.scheduleLossProbe(now, true) {
			s.rearmRTO(now, true)
		}
	}
	if dataInflight {
		s.rateGen(delivered, lost, &rs, now)
		s.bbrMain(&rs, now)
	}
}

func (s *Stream) sackValid(b SACKBlock) bool {
	if seqDiff(b.End, s.seq) > 0 || seqDiff(b.Start, b.End) >= 0 ||
		seqDiff(b.Start, s.seq) >= 0 || seqDiff(b.Start, s.remoteAcked) < 0 {
		return false
	}
	return true
}

// relay forwards a packet for a relaying stream unchanged except bytes
// 4..7, which become the destination stream's remote id.
// maxRelayHeld bounds the packets a relaying stream holds for a partner
// that is not connected yet: a first flight (secret-stream's header, a
// first write) fits.
const maxRelayHeld = 16

func (s *Stream) relay(raw []byte, p *Packet) {
	if seqDiff(p.Seq, s.seq) > 0 {
		s.seq = p.Seq
	}
	dst := s.relayTo
	if s.sock != nil && len(dst.relayHeld) > 0 {
		// This side's first packet connected s: what the other side
		// sent before that goes out first, in order.
		for _, h := range dst.relayHeld {
			binary.LittleEndian.PutUint32(h[4:], s.remoteID)
			b := s.sock.scratch(len(h))
			copy(b, h)
			s.sock.queue(b, s.ruaddr, s.raddr)
		}
		dst.relayHeld = nil
	}
	if dst.sock != nil && !dst.dead {
		binary.LittleEndian.PutUint32(raw[4:], dst.remoteID)
		b := dst.sock.scratch(len(raw))
		copy(b, raw)
		dst.sock.queue(b, dst.ruaddr, dst.raddr)
	} else if !dst.dead && len(s.relayHeld) < maxRelayHeld {
		// A blind relay connects each of its streams on that side's
		// first packet (its firewall), so the side whose first packet
		// arrives first finds the other end unconnected. libudx drops
		// such a packet, and the sender waits out its 1 s initial RTO:
		// measured on relayed dials (BenchmarkNATMatrixWAN,
		// random×random), 14 RTTs instead of 5 on most of them. Hold it
		// until the other end connects.
		s.relayHeld = append(s.relayHeld, slices.Clone(raw))
	}
	if p.Type&FlagDestroy != 0 {
		s.finish(ErrReset)
	}
}
