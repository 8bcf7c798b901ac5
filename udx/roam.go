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
// What may move a stream is the question. A packet's payload is not
// authenticated at this layer (secret-stream frames span packets and are
// checked above us), so what a packet can prove is that its sender knows
// the stream's state: the stream id, 32 random bits that never appear
// anywhere but on the path itself, and sequence numbers that fit the
// connection's current windows (roamable). That is exactly what libudx
// already requires of a packet before it acts on it from any address,
// DESTROY included: an off-path sender who can guess a live id and
// window can end the stream today, and the same guess is needed to move
// it. Moving it also needs news, a packet that acknowledges data not
// acknowledged yet or brings data not received yet, so that a stale
// packet (a late one from the old path, or a replay of a captured one)
// does not move the stream back; or else silence on the current path
// for roamSilence: a peer that moved while it had nothing new to say
// only retransmits (what we already have) or acknowledges nothing new
// (our packets go to its old address), and without this it would wait
// for its next new byte, up to a 5 s secret-stream keepalive. A stale
// packet can then move the stream only off a path that has gone quiet.
// An on-path attacker can do anything a path can (drop, delay, reset);
// moving the stream does not add to that, and everything the stream
// carries stays authenticated and encrypted by secret-stream, which
// fails closed on a single forged byte.

// roamSilence is how long the current path must have been silent before
// a packet from a new address that fits the stream but brings no news
// moves it: two smoothed RTTs, at least 200 ms (µs).
func (s *Stream) roamSilence() int64 {
	return max(2*s.srtt, 200_000)
}

// roamable reports whether p, which came in on sk from an address that is
// not the stream's remote, may move the stream there: the stream is
// connected on sk, p is no DESTROY, its ack lies between what the peer
// acknowledged before and what we sent, its seq within the out-of-order
// window around our ack, and it brings news (new data or a new ack) or
// the current path has been silent for roamSilence.
func (s *Stream) roamable(sk *Socket, p *Packet, now int64) bool {
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
	if d < -oooCap || d > oooCap {
		return false
	}
	newData := d >= 0 && p.Type&flagDataOrEnd != 0
	newAck := seqDiff(p.Ack, s.remoteAcked) > 0
	return newData || newAck || now-s.heardAt >= s.roamSilence()
}

// roamLocked sends everything from now on to from. Congestion state, RTT
// and path MTU stay: a rebinding keeps the path, and a changed one shows
// up in them within a few round trips. Packets already lost on the way to
// the old address are found as usual, by RACK once the peer acknowledges
// what follows them on the new path, or by the TLP or RTO.
func (s *Stream) roamLocked(from netip.AddrPort, now int64) {
	addr := netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if s.sock.ipv6 && addr.Addr().Is4() {
		addr = netip.AddrPortFrom(netip.AddrFrom16(addr.Addr().As16()), addr.Port())
	}
	s.raddr = addr
	s.ruaddr = net.UDPAddrFromAddrPort(addr)
	s.remAddr.Store(&addr)
	s.stats.Roams++
	s.heardAt = now
	s.u.touch(s)
}
