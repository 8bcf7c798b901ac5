package udx

import (
	"net"
	"net/netip"
)

// Roaming (FirewallRoam) lets a connected stream follow its peer to a new
// source address: a NAT that lost its mapping (conntrack flushed, a
// router rebooted, a mapping timed out over a quiet spell) gives the
// peer's next packet a new port, a phone moving between networks gives it
// a new address. libudx accepts such packets on the stream's socket but
// keeps sending to the old address, where nothing listens any more, so
// the connection stalls until its RTOs run out.
//
// What may move a stream is the question. A udx packet is not
// authenticated: secret-stream frames span packets and are checked above
// us. What a packet alone can show is that its sender knows the stream's
// state (the stream id and sequence numbers that fit the current
// windows), which an on-path observer knows too, and a captured packet
// replayed from elsewhere carries. So a packet from a new address only
// makes that address a candidate, and the stream moves once the layer
// above has authenticated bytes that came from it:
//
//   - A packet from a new address on the stream's socket that fits the
//     stream (roamFits: no DESTROY, its ack between what the peer
//     acknowledged before and what we sent, its seq within the
//     out-of-order window around our ack) and brings news (data beyond
//     any received yet, or an ack of data not acknowledged yet) makes
//     the address the candidate, replacing an older one. A stale packet
//     (a late one from the old path, one that fills a gap, a replay)
//     brings no news, so it cannot displace the candidate; later packets
//     from the candidate count as its own whatever they bring.
//   - The stream notes the offset in its byte stream of the first byte
//     delivered from a candidate packet, in order or out of order
//     (candOff; out-of-order packets are marked oooFromCand).
//   - The layer above calls Authenticated(n) when it has authenticated
//     the first n bytes it read from the stream (secret-stream does after
//     each message's MAC verifies, which also vouches for every byte
//     before it: a forged length prefix or header would make that
//     message fail). Once n > candOff, the candidate sent the peer's own
//     authentic data, and the stream moves there (roamLocked).
//
// So a spoofed, replayed or stale packet never moves a stream: it carries
// no bytes, bytes already delivered (a duplicate delivers nothing), or
// bytes that fail the MAC (which ends the stream, as such bytes already
// do from any address, libudx accepting them on the socket). Only a
// sender that relays the peer's fresh packets from elsewhere, before the
// peer's own copies arrive, can move the stream to itself, and it is on
// the path already (it can drop, delay and reset as well); the peer's
// next data from its real address moves the stream back. What the stream
// carries stays authenticated and encrypted by secret-stream either way.
//
// Two things make the move come soon:
//
//   - The candidate's data is acknowledged to the candidate as well as to
//     the current address (candAck): a peer that moved while sending
//     would otherwise get no ACKs, fill its congestion window and stop in
//     the middle of a secret-stream message, which could then never be
//     authenticated. A pure ACK per batch of the candidate's data
//     packets, no larger than what an ACK to the current path says, to an
//     address that just sent us a packet that fits the stream.
//   - The peer that moved speaks: pure ACKs carry nothing to
//     authenticate, so a peer that only receives (a download) would
//     never move the other side, whose data keeps going to the old
//     address. When data that was coming in (two packets within the
//     stall time of each other) stops for stallWait, max(2·SRTT, 200 ms),
//     and the receive window is not what holds the sender back, the
//     stream calls the OnReceiveStall hook once; secret-stream then sends
//     its empty keepalive message, new authenticated data from the new
//     address, which udx delivers reliably. A stall of a peer that just
//     finished costs one 20-byte message.
//
// On the move, packets in flight to the old address are taken as lost and
// resent at once: they went where nothing listens, and waiting for the
// RTO (at least 1 s, maybe backed off) would stall the stream that long.
//
// The stream's own address changing is what the other side sees; this
// side needs nothing but to keep sending (its kernel picks the new source
// address or port).

// oooFromCand marks an out-of-order packet (oooTypes) that came from the
// candidate: its bytes are candidate bytes when they are delivered.
const oooFromCand = 0x80

// roamFits reports whether p, which came in on sk from an address that is
// not the stream's remote, fits the stream: the stream is connected on
// sk and relays nothing, p is no DESTROY, its ack lies between what the
// peer acknowledged before and what we sent, and its seq within the
// out-of-order window around our ack.
func (s *Stream) roamFits(sk *Socket, p *Packet) bool {
	if !s.connected || s.dead || sk != s.sock || s.relayTo != nil || p.BadOffset {
		return false
	}
	if p.Type&FlagDestroy != 0 {
		return false
	}
	if seqDiff(p.Ack, s.remoteAcked) < 0 || seqDiff(s.seq, p.Ack) < 0 {
		return false
	}
	d := seqDiff(p.Seq, s.ack)
	return d >= -oooCap && d <= oooCap
}

// roamNews reports whether p brings news: data beyond any received yet,
// or an ack of data not acknowledged yet. Data that fills a gap is no
// news: around a rebinding it is what the network reordered from the old
// address, which must not become the candidate again.
func (s *Stream) roamNews(p *Packet) bool {
	top := s.ack
	if n := len(s.blocks); n > 0 {
		top = s.blocks[n-1].End
	}
	newData := seqDiff(p.Seq, top) >= 0 && p.Type&flagDataOrEnd != 0
	return newData || seqDiff(p.Ack, s.remoteAcked) > 0
}

// roamCandidate handles a packet for the connected stream from from, an
// address that is not its remote, under FirewallRoam. It reports whether
// the packet counts as the candidate's: it came from the candidate and
// fits the stream, or it fits and brings news, and then from becomes the
// candidate.
func (s *Stream) roamCandidate(sk *Socket, from netip.AddrPort, p *Packet) bool {
	if !s.roamFits(sk, p) {
		return false
	}
	if s.cand.IsValid() && sameAddrPort(from, s.cand) {
		return true
	}
	if !s.roamNews(p) {
		return false
	}
	s.dropCandidate()
	s.cand, s.candU = s.peerAddr(from)
	s.stats.RoamCandidates++
	return true
}

// dropCandidate forgets the candidate and what came from it.
func (s *Stream) dropCandidate() {
	if !s.cand.IsValid() {
		return
	}
	s.cand, s.candU, s.candAck = netip.AddrPort{}, nil, false
	s.candOff = -1
	s.candOffA.Store(-1)
	for _, b := range s.blocks {
		for q := b.Start; q != b.End; q++ {
			s.oooTypes[q&(oooCap-1)] &^= oooFromCand
		}
	}
}

// noteCandBytes is called before n bytes are delivered to the reader;
// fromCand says they came from the candidate.
func (s *Stream) noteCandBytes(fromCand bool, n int) {
	if fromCand && n > 0 && s.candOff < 0 && s.cand.IsValid() {
		s.candOff = s.rxOff
		s.candOffA.Store(s.rxOff)
	}
}

// Authenticated tells the stream that the layer above has authenticated
// the first n bytes it read from it (secret-stream calls it after each
// message's MAC verifies). A peer's candidate new address becomes the
// stream's remote once bytes that came from it are authenticated (see
// FirewallRoam). It is cheap (an atomic store) unless it moves the
// stream, and safe to call from any goroutine; n below an earlier call's
// is ignored. The bytes are counted from the stream's first, as Read
// returns them: a layer that did not read from the start reports less
// than it has, which can only delay a move.
func (s *Stream) Authenticated(n int64) {
	for {
		old := s.authOff.Load()
		if n <= old {
			return
		}
		if s.authOff.CompareAndSwap(old, n) {
			break
		}
	}
	if c := s.candOffA.Load(); c >= 0 && n > c {
		s.u.kickStream(s) // service moves it
	}
}

// roamLocked moves the stream to the candidate. Congestion state, RTT
// and path MTU stay: a rebinding keeps the path, and a changed one shows
// up in them within a few round trips. Packets in flight to the old
// address are lost (see above) and go out again, to the new one.
func (s *Stream) roamLocked(now int64) {
	addr, uaddr := s.cand, s.candU
	s.dropCandidate()
	if !addr.IsValid() || !s.connected || s.dead {
		return
	}
	s.raddr = addr
	s.ruaddr = uaddr
	s.remAddr.Store(&addr)
	s.stats.Roams++
	lost := 0
	for p := s.inflight.head; p != nil; {
		next := p.next
		if p.sock == s.sock && !sameAddrPort(p.addr, addr) {
			s.markLost(p)
			s.unprobe(p)
			lost++
		}
		p = next
	}
	if lost > 0 && s.caState == caOpen {
		s.stats.FastRecoveries++
		s.caState = caRecovery
		s.highSeq = s.seq
		s.tlpInFlight, s.tlpIsRetrans = false, false
	}
	s.ackNeeded, s.ackNow = true, true // tell the peer where we are now
	s.u.touch(s)
}

// peerAddr is from as the stream's socket sends to it: a dual-stack
// socket stores v4 peers v4-mapped (see connectLocked).
func (s *Stream) peerAddr(from netip.AddrPort) (netip.AddrPort, *net.UDPAddr) {
	addr := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if s.sock.ipv6 && addr.Addr().Is4() {
		addr = netip.AddrPortFrom(netip.AddrFrom16(addr.Addr().As16()), addr.Port())
	}
	return addr, net.UDPAddrFromAddrPort(addr)
}

// OnReceiveStall registers f, which the stream calls when data it was
// receiving stops coming (see roam.go): the layer above then sends
// something authenticated (secret-stream an empty message), so that if
// this side's address changed, the peer sees authenticated data from the
// new one and moves there. f runs on the instance's loop and must not
// block or call into the stream; nil unregisters it.
func (s *Stream) OnReceiveStall(f func()) {
	_ = s.u.do(func(int64) error {
		if !s.dead {
			s.onStall = f
		}
		return nil
	})
}

// stallWait is how long data that was coming in must stop before the
// stall hook runs: two smoothed RTTs, at least 200 ms (µs).
func (s *Stream) stallWait() int64 {
	return max(2*s.srtt, 200_000)
}

// noteRx records new data arriving now. Data that follows earlier data
// within stallWait is a flow, whose stopping checkStall looks for; a lone
// packet (a keystroke's echo) is not.
func (s *Stream) noteRx(now int64) {
	if s.onStall == nil {
		return
	}
	w := s.stallWait()
	if s.stallAt == 0 && s.rxAt != 0 && now-s.rxAt < w {
		s.stallAt = now + w
	}
	s.rxAt = now
}

// checkStall runs when stallAt is due: the stall hook is called once
// when nothing new came in for stallWait, the peer has not ended, and our
// receive window is open (a reader that is behind holds the sender back,
// not its path). The keepalive it leads to is stream data, which udx
// retransmits until acknowledged, so once is enough.
func (s *Stream) checkStall(now int64) {
	w := s.stallWait()
	if now-s.rxAt < w {
		s.stallAt = s.rxAt + w
		return
	}
	s.stallAt = 0
	if s.onStall == nil || !s.connected || s.dead || s.relayTo != nil || s.remoteEnding {
		return
	}
	if s.recvRwnd() < s.rwndMax/2 {
		return
	}
	s.stats.RecvStalls++
	s.onStall()
}
