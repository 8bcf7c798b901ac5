package udx

import (
	"net"
	"testing"
	"time"
)

// TestRTTHint: a stream's first packet, lost, is sent again after about
// two of SetRTTHint's round trips, or, with HintRTTFromPeer, two of the
// time from that packet to the peer's first one (so 3 of it from our
// packet), and again after twice as long if that copy is lost too;
// without a hint (or with one of 1 s or more, ignored) only the 1 s
// initial RTO sends it again, and then the RTO doubled.
func TestRTTHint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		hint     time.Duration
		fromPeer time.Duration // HintRTTFromPeer: the peer speaks this long after our first packet
		lose     int           // copies lost before the one timed (1: the original)
		min, max time.Duration
	}{
		{"hint-20ms", 20 * time.Millisecond, 0, 1, 30 * time.Millisecond, 400 * time.Millisecond},
		{"no-hint", 0, 0, 1, 900 * time.Millisecond, 3 * time.Second},
		{"hint-too-long", 2 * time.Second, 0, 1, 900 * time.Millisecond, 3 * time.Second},
		{"from-peer-50ms", 0, 50 * time.Millisecond, 1, 120 * time.Millisecond, 500 * time.Millisecond},
		// The probe lost too: probed again after twice as long (40 + 80
		// ms), not after the RTO.
		{"hint-20ms-probe-lost", 20 * time.Millisecond, 0, 2, 90 * time.Millisecond, 500 * time.Millisecond},
		{"no-hint-probe-lost", 0, 0, 2, 2 * time.Second, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sock, raw, st := rawStream(t)
			if tc.hint > 0 {
				if err := st.SetRTTHint(tc.hint); err != nil {
					t.Fatal(err)
				}
			}
			if tc.fromPeer > 0 {
				if err := st.HintRTTFromPeer(); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := st.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			// The first copies are "lost": read and ignored.
			first := readData(t, raw, 5*time.Second)
			sent := time.Now()
			for range tc.lose - 1 {
				readData(t, raw, 5*time.Second)
			}
			if tc.fromPeer > 0 {
				// The peer's first packet, acking nothing of ours.
				time.Sleep(tc.fromPeer)
				h := Header{Type: FlagData, ID: 5, RWnd: 1 << 20, Seq: 0, Ack: 0}
				sendRaw(t, raw, sock, AppendPacket(nil, &h, nil, []byte("hi")))
			}
			again := readData(t, raw, 5*time.Second)
			el := time.Since(sent)
			if again.Seq != first.Seq || string(again.Payload) != "hello" {
				t.Fatalf("second packet seq %d %q, want seq %d \"hello\" again", again.Seq, again.Payload, first.Seq)
			}
			t.Logf("sent again after %v", el)
			if el < tc.min || el > tc.max {
				t.Fatalf("sent again (copy %d) after %v, want %v..%v", tc.lose+1, el, tc.min, tc.max)
			}
			if got := st.Stats().RTT; got != 0 {
				t.Fatalf("Stats().RTT %v before any sample; the hint is not a measurement", got)
			}
		})
	}
}

// rawStream is stream 5 on a UDP socket, connected to stream 6 of a raw
// UDP peer; it is destroyed when the test ends.
func rawStream(t *testing.T) (*Socket, *net.UDPConn, *Stream) {
	t.Helper()
	sock := udpSocket(t)
	raw := rawPeer(t)
	st, err := sock.NewStream(5, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Destroy() })
	if err := st.Connect(sock, 6, raw.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	return sock, raw, st
}

// readData returns the next DATA packet raw receives.
func readData(t *testing.T, raw *net.UDPConn, d time.Duration) Packet {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(d)
	for {
		raw.SetReadDeadline(deadline)
		n, err := raw.Read(buf)
		if err != nil {
			t.Fatalf("no DATA packet: %v", err)
		}
		var sacks [8]SACKBlock
		p, err := DecodePacket(buf[:n], sacks[:0])
		if err == nil && p.Type&FlagData != 0 {
			p.Payload = append([]byte(nil), p.Payload...)
			return p
		}
	}
}

// TestRTTHintProbesStop: with every copy lost, the hinted probes back off
// and hand over to the RTO: 20 ms of hint sends copies at 0, 40, 120,
// 280, 600 and 1240 ms, then the 1 s RTO's at 2240; no more.
func TestRTTHintProbesStop(t *testing.T) {
	_, raw, st := rawStream(t)
	if err := st.SetRTTHint(20 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var at []time.Duration
	buf := make([]byte, 2048)
	for time.Since(start) < 3*time.Second {
		raw.SetReadDeadline(start.Add(3 * time.Second))
		n, err := raw.Read(buf)
		if err != nil {
			break
		}
		if p, err := DecodePacket(buf[:n], nil); err == nil && p.Type&FlagData != 0 {
			at = append(at, time.Since(start).Round(time.Millisecond))
		}
	}
	t.Logf("copies at %v", at)
	if len(at) < 6 || len(at) > 8 {
		t.Fatalf("%d copies in 3 s, want 7 (probes backing off to the RTO)", len(at))
	}
}
