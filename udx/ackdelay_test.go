package udx

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestDelayedAck drives one stream's state machine with explicit times
// (far ahead of the loop's clock, so that the loop's own timers never
// act) and checks what reaches a raw UDP peer: a lone in-order DATA
// packet is acknowledged ackDelay later, or at once by data we send
// meanwhile; two unacknowledged packets, a duplicate, a gap, the packet
// that fills it, or an END are acknowledged at once.
func TestDelayedAck(t *testing.T) {
	sk := udpSocket(t)
	peer := mustUDP(t)
	defer peer.Close()
	s, err := sk.NewStream(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(sk, 7, peer.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	var base int64
	sk.u.do(func(now int64) error { base = now + 1_000_000_000; return nil })

	// in runs fn on the loop with the stream's clock at base+at µs.
	in := func(at int64, fn func(now int64)) {
		t.Helper()
		if err := sk.u.do(func(int64) error { fn(base + at); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	packet := func(typ uint8, seq uint32, payload string) func(now int64) {
		return func(now int64) {
			raw := make([]byte, HeaderSize+len(payload))
			h := Header{Type: typ, ID: 1, RWnd: 1 << 20, Seq: seq, Ack: 0}
			h.Put(raw)
			copy(raw[HeaderSize:], payload)
			p, err := DecodePacket(raw, nil)
			if err != nil {
				t.Error(err)
				return
			}
			s.onPacket(raw, &p, now)
		}
	}
	flushAt := func(now int64) { s.flush(now) }
	// next returns the next packet the stream sent, or ok=false if none
	// came within wait.
	buf := make([]byte, 2048)
	next := func(wait time.Duration) (p Packet, ok bool) {
		t.Helper()
		peer.SetReadDeadline(time.Now().Add(wait))
		n, err := peer.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return p, false
		}
		if err != nil {
			t.Fatal(err)
		}
		p, err = DecodePacket(buf[:n], nil)
		if err != nil {
			t.Fatal(err)
		}
		return p, true
	}
	wantAck := func(step string, ack uint32, typ uint8) {
		t.Helper()
		p, ok := next(5 * time.Second)
		if !ok {
			t.Fatalf("%s: nothing sent, want type %#x with ack %d", step, typ, ack)
		}
		if p.Type != typ || p.Ack != ack {
			t.Fatalf("%s: sent type %#x ack %d, want type %#x ack %d", step, p.Type, p.Ack, typ, ack)
		}
	}
	wantNothing := func(step string) {
		t.Helper()
		if p, ok := next(100 * time.Millisecond); ok {
			t.Fatalf("%s: sent type %#x ack %d, want nothing yet", step, p.Type, p.Ack)
		}
	}

	in(0, func(now int64) { packet(FlagData, 0, "a")(now); flushAt(now) })
	wantNothing("lone DATA")
	in(ackDelay-1, flushAt)
	wantNothing("lone DATA, just before ackDelay")
	in(ackDelay, flushAt)
	wantAck("lone DATA, at ackDelay", 1, 0)

	in(2*ackDelay, func(now int64) { packet(FlagData, 1, "b")(now); flushAt(now) })
	wantNothing("second lone DATA")
	in(2*ackDelay+10, func(now int64) {
		if _, err := s.Write([]byte("reply")); err != nil {
			t.Error(err)
		}
		flushAt(now)
	})
	wantAck("reply", 2, FlagData)
	in(4*ackDelay, flushAt)
	wantNothing("after the reply carried the ACK")

	in(4*ackDelay+10, func(now int64) { packet(FlagData, 1, "b")(now); flushAt(now) })
	wantAck("duplicate of the last DATA (our ACK lost)", 2, 0)

	in(5*ackDelay, func(now int64) {
		packet(FlagData, 2, "c")(now)
		packet(FlagData, 3, "d")(now)
		flushAt(now)
	})
	wantAck("two DATA packets", 4, 0)

	in(6*ackDelay, func(now int64) { packet(FlagData, 5, "f")(now); flushAt(now) })
	wantAck("DATA after a gap", 4, FlagSACK)

	in(7*ackDelay, func(now int64) { packet(FlagData, 4, "e")(now); flushAt(now) })
	wantAck("DATA filling the gap", 6, 0)

	in(8*ackDelay, func(now int64) { packet(FlagEnd, 6, "")(now); flushAt(now) })
	wantAck("END", 7, 0)
}
