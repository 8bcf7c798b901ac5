package udx

import (
	"strings"
	"testing"
	"time"
)

// TestEagerCopy: once the stream has an RTT sample, a small packet alone
// in flight goes out again a quarter RTT later (at least 2 ms), long
// before the tail loss probe's two RTTs; a full-size one waits for the
// probe.
func TestEagerCopy(t *testing.T) {
	const rtt = 40 * time.Millisecond
	for _, tc := range []struct {
		name     string
		payload  string
		min, max time.Duration
	}{
		// The test times from its read of the first packet, which a
		// busy machine running -race can delay by 10 ms and more (CI
		// saw the probe, due 92 ms after the packet, 79.7 ms after
		// that read), so the bounds only separate the copy (not at
		// once, long before the probe) from the probe (after a whole
		// RTT, where the copy would have gone at a quarter).
		{"small", "typed", rtt / 8, rtt},
		{"full-size", strings.Repeat("x", 1100), rtt, 10 * rtt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sock, raw, st := rawStream(t)
			// One exchange gives the stream its RTT sample.
			if _, err := st.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			first := readData(t, raw, 5*time.Second)
			time.Sleep(rtt)
			ack := Header{ID: 5, RWnd: 1 << 20, Seq: 0, Ack: first.Seq + 1}
			sendRaw(t, raw, sock, AppendPacket(nil, &ack, nil, nil))
			deadline := time.Now().Add(5 * time.Second)
			for st.Stats().RTT == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no RTT sample from the ACK")
				}
				time.Sleep(time.Millisecond)
			}
			if _, err := st.Write([]byte(tc.payload)); err != nil {
				t.Fatal(err)
			}
			p := readData(t, raw, 5*time.Second)
			sent := time.Now()
			again := readData(t, raw, 5*time.Second)
			el := time.Since(sent)
			if again.Seq != p.Seq || string(again.Payload) != tc.payload {
				t.Fatalf("second packet seq %d (%d bytes), want seq %d again", again.Seq, len(again.Payload), p.Seq)
			}
			t.Logf("RTT %v; %d bytes sent again after %v", st.Stats().RTT, len(tc.payload), el)
			if el < tc.min || el > tc.max {
				t.Fatalf("sent again after %v, want %v..%v", el, tc.min, tc.max)
			}
			if got := st.Stats().Retransmits; tc.name == "small" && got != 0 {
				t.Fatalf("Stats().Retransmits %d after the eager copy, want 0", got)
			}
		})
	}
}
