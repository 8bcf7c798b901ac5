package udx

import (
	"net/netip"
	"testing"
	"time"
)

// bbrPath is a synthetic bottleneck, one round trip at a time: the sender
// offers min(cwnd, window) packets (window: a flow-control window above
// udx, such as a yamux stream's); the link carries bdp of them per base
// RTT, queues up to queue more, which add to the RTT, and drops the rest;
// randomLoss then drops that share of what got through. Everything offered
// in a round is acknowledged (or lost) by one ACK at its end.
type bbrPath struct {
	bdp, queue, window int
	randomLoss         float64
	baseRTT            int64 // µs
}

// bbrT0 is when newBBRStream's BBR starts (µs).
const bbrT0 = 1_000_000

// newBBRStream returns a stream whose BBR started at bbrT0, with
// nothing sent yet.
func newBBRStream() *Stream {
	s := &Stream{mtu: mtuBase, raddr: netip.MustParseAddrPort("192.0.2.1:1"), cwnd: initialCwnd}
	s.bbrInit(bbrT0)
	return s
}

// run drives a fresh stream's BBR for rounds round trips and returns it.
func (p bbrPath) run(rounds int) *Stream {
	s := newBBRStream()
	now := int64(bbrT0)
	lossCarry := 0.0
	for range rounds {
		sent := min(int(s.cwnd), p.window)
		q := min(max(sent-p.bdp, 0), p.queue)
		lost := max(sent-p.bdp-p.queue, 0)
		lossCarry += float64(sent-lost) * p.randomLoss
		lost += int(lossCarry)
		lossCarry -= float64(int(lossCarry))
		rtt := p.baseRTT + p.baseRTT*int64(q)/int64(p.bdp)
		rs := rateSample{
			priorDelivered: s.delivered,
			priorTime:      now,
			interval:       rtt,
			delivered:      int64(sent - lost),
			ackedSacked:    uint32(sent - lost),
			losses:         uint32(lost),
			rtt:            rtt,
			isAppLimited:   sent < int(s.cwnd),
		}
		now += rtt
		s.delivered += uint32(sent - lost)
		s.lostCount += uint32(lost)
		s.srtt = rtt
		s.bbrMain(&rs, now)
	}
	return s
}

func TestBBRStartupEnds(t *testing.T) {
	const bdp = 1000
	for _, tc := range []struct {
		name    string
		path    bbrPath
		startup bool // still in STARTUP after 40 rounds
	}{
		// Not app-limited: the plateau test ends STARTUP (BBR v1).
		{"cwnd-limited", bbrPath{bdp: bdp, queue: bdp / 2, window: 1 << 30}, false},
		// The case the loss exit is for: a window of 1.6 BDP above udx makes
		// every sample app-limited once STARTUP's cwnd passes it; the
		// router's queue overflows every round.
		{"window-limited-overflow", bbrPath{bdp: bdp, queue: bdp * 4 / 10, window: bdp * 16 / 10}, false},
		// Random loss on an empty queue is no reason to stop probing.
		{"random-loss-no-queue", bbrPath{bdp: bdp, queue: bdp, window: bdp * 9 / 10, randomLoss: 0.05}, true},
		// A standing queue with loss under 2%.
		{"queue-little-loss", bbrPath{bdp: bdp, queue: bdp, window: bdp * 16 / 10, randomLoss: 0.01}, true},
		// A standing queue and no loss: nothing tells STARTUP the pipe is
		// full, as before (the window caps what it can overshoot).
		{"queue-no-loss", bbrPath{bdp: bdp, queue: bdp, window: bdp * 16 / 10}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.path.baseRTT = 100_000
			s := tc.path.run(40)
			if got := s.bbr.state == bbrStartup; got != tc.startup {
				t.Fatalf("in STARTUP after 40 rounds: %v, want %v (state %d, pacing gain %.2f, cwnd %d)",
					got, tc.startup, s.bbr.state, s.bbr.pacingGain, s.cwnd)
			}
			if !tc.startup {
				// Out of STARTUP the bandwidth estimate is the bottleneck's,
				// and pacing is no longer at the 2.89x gain.
				bw := s.bbrBW() * float64(tc.path.baseRTT)
				if bw < bdp*0.9 || bw > bdp*1.1 {
					t.Fatalf("bandwidth estimate %.0f packets per RTT, want about %d", bw, bdp)
				}
				if s.bbr.pacingGain > 1.25 {
					t.Fatalf("pacing gain %.2f after STARTUP", s.bbr.pacingGain)
				}
			}
		})
	}
}

// TestBBRStartupHeavyLoss: a STARTUP round that lost more than an eighth
// of its packets ends STARTUP even when its smallest RTT saw no queue (the
// sender's recovery let the queue run empty); random loss and a few
// packets lost from a small round do not.
func TestBBRStartupHeavyLoss(t *testing.T) {
	for _, c := range []struct {
		delivered, lost uint32
		queued, ends    bool
	}{
		{2037, 857, false, true}, // transatlantic's cold STARTUP
		{2037, 857, true, true},
		{500, 15, false, false}, // 3 % random loss
		{500, 15, true, true},   // 3 % over a standing queue
		{200, 31, false, false}, // a few packets of a small round
		{400, 50, false, false}, // 11 %
		{400, 60, false, true},
	} {
		s := newBBRStream()
		s.bbrCheckStartupLoss(bbrRound{delivered: c.delivered, lost: c.lost, queued: c.queued})
		if s.bbr.fullBWReached != c.ends {
			t.Fatalf("%d delivered, %d lost, queued %v: STARTUP ends %v, want %v", c.delivered, c.lost, c.queued, s.bbr.fullBWReached, c.ends)
		}
	}
}

// TestBBRStartupSamplesExpire: the max filter's samples from STARTUP leave
// it bbrStartupBWRounds after STARTUP ends, for the lower ones PROBE_BW
// took since; a PROBE_BW sample stays the filter's whole window.
func TestBBRStartupSamplesExpire(t *testing.T) {
	const (
		high, path = 0.0134, 0.0121 // packets/µs: STARTUP's overshoot, the path's rate
		exit       = 20             // the round STARTUP ends in
	)
	s := newBBRStream()
	s.bbr.minRTT = 100_000
	s.bbr.rttCount = exit
	s.bbr.bw.reset(exit, high)
	s.bbr.fullBWReached = true
	s.bbrCheckDrain()
	if s.bbr.state == bbrStartup {
		t.Fatal("still in STARTUP after its end")
	}
	for r := int64(exit + 1); r <= exit+bbrBWFilterRounds; r++ {
		want := path
		if r <= exit+bbrStartupBWRounds {
			want = high
		}
		if got := s.bbr.bw.runningMax(bbrBWFilterRounds, r, path); got != want {
			t.Fatalf("round %d after STARTUP's end: max filter %.4f, want %.4f", r-exit, got, want)
		}
	}

	// The same overshoot taken in PROBE_BW stays for the whole window.
	var m minmax
	m.reset(exit, high)
	for r := int64(exit + 1); r <= exit+bbrBWFilterRounds; r++ {
		if got := m.runningMax(bbrBWFilterRounds, r, path); got != high {
			t.Fatalf("round %d after a PROBE_BW sample: max filter %.4f, want %.4f", r-exit, got, high)
		}
	}
}

// TestBBROverpacing drives bbrCheckOverpacing one round at a time: a
// gain-1 round that carried clearly less than the pacing rate while a
// queue stood caps it there (by at most a tenth a round, never below 3/4
// of the max filter's), lost packets count as carried, rounds spanning an
// idle spell are skipped, a probe round that carries 21/20 of the cap or
// more lifts it by a twentieth, PROBE_RTT keeps it and STARTUP forgets it.
func TestBBROverpacing(t *testing.T) {
	const (
		bw  = 0.02    // packets/µs: 2000 packets per 100 ms round
		rtt = 100_000 // µs
	)
	s := newBBRStream()
	s.bbr.state = bbrProbeBW
	s.bbr.bw.reset(1, bw)
	s.srtt = rtt
	standing := true
	// round ends a round that took dur µs, delivered and lost packets,
	// at pacing gains from gmin to gmax.
	round := func(dur int64, delivered, lost uint32, gmin, gmax float64) {
		s.bbr.cycleIndex = 4
		s.bbrCheckOverpacing(bbrRound{delivered: delivered, lost: lost, dur: dur, standing: standing, gainMin: gmin, gainMax: gmax})
	}
	per := func(f float64) uint32 { return uint32(f * bw * rtt) } // packets in a round at f of bw
	want := func(step string, f float64, drain bool) {
		t.Helper()
		if got := s.bbrPaceBW() / bw; got < f-0.001 || got > f+0.001 {
			t.Fatalf("%s: pacing bandwidth %.3f of the max filter's, want %.3f", step, got, f)
		}
		if got := s.bbr.cycleIndex == 1; got != drain {
			t.Fatalf("%s: gain cycle restarted at its 0.75 phase: %v, want %v", step, got, drain)
		}
	}
	round(rtt, per(0.97), 0, 1, 1)
	want("a round carrying 0.97 of the pacing rate", 1, true)
	standing = false
	round(rtt, per(0.90), 0, 1, 1)
	want("a round carrying 0.90 without a standing queue", 1, false)
	standing = true
	round(rtt, per(0.90), per(0.03), 1, 1)
	want("0.90 delivered and 0.03 lost", 0.93, true)
	round(3*rtt, per(0.3), 0, 1, 1)
	want("a round spanning an idle spell", 0.93, false)
	round(rtt, per(0.97), 0, 0.75, 1.25)
	want("a probe round carrying less than 21/20 of the cap", 0.93, false)
	round(rtt, per(1.04), 0, 1, 1.25)
	want("a probe round carrying the max filter's rate", 0.93*21/20, false)
	round(rtt, per(1.04), 0, 1, 1.25)
	want("a second probe round lifting the cap to the max filter's", 1, false)
	round(rtt, per(0.80), 0, 1, 1)
	want("a round carrying 0.80", 0.9, true)
	round(rtt, per(0.80), 0, 1, 1)
	want("another round carrying 0.80", 0.81, true)
	round(rtt, per(0.50), 0, 1, 1)
	want("a round carrying 0.50", 0.75, true)
	s.bbr.state = bbrProbeRTT
	round(rtt, per(0.5), 0, 1, 1)
	want("in PROBE_RTT", 0.75, false)
	s.bbr.state = bbrStartup
	round(rtt, per(0.5), 0, 1, 1)
	want("in STARTUP", 1, false)
}

// TestBBRDrainToBDP: the 0.75 phase that a standing queue started lasts
// until inflight is down to a BDP, however many min RTTs that takes (up
// to bbrDrainRTTsMax), where the gain cycle's own ends after one.
func TestBBRDrainToBDP(t *testing.T) {
	const (
		bw     = 0.002 // packets/µs
		minRTT = 75_000
		bdp    = 150 // packets
	)
	s := newBBRStream()
	s.bbr.state = bbrProbeBW
	s.bbr.bw.reset(1, bw)
	s.bbr.minRTT = minRTT
	s.bbr.cycleIndex, s.bbr.pacingGain, s.bbr.cycleStamp = 1, 0.75, 1_000_000
	ends := func(elapsed int64, inflight int) bool {
		s.deliveredTs = s.bbr.cycleStamp + elapsed
		s.inflight.n = inflight
		return s.bbrIsNextCyclePhase(&rateSample{})
	}
	for _, c := range []struct {
		drain    bool
		elapsed  int64
		inflight int
		want     bool
	}{
		{false, minRTT + 1, 300, true},
		{false, minRTT / 2, bdp, true},
		{false, minRTT / 2, 300, false},
		{true, minRTT + 1, 300, false},
		{true, 2 * minRTT, bdp + 1, false},
		{true, minRTT / 2, bdp, true},
		{true, bbrDrainRTTsMax*minRTT + 1, 300, true},
	} {
		s.bbr.drainMin = 0
		if c.drain {
			s.bbr.drainMin = 140_000
		}
		if got := ends(c.elapsed, c.inflight); got != c.want {
			t.Fatalf("drain after a standing queue %v, %d µs in, %d in flight: phase ends %v, want %v", c.drain, c.elapsed, c.inflight, got, c.want)
		}
	}
}

// TestBBRFutileDrains: a drain that leaves a standing queue as it was,
// twice in a row, shows a queue that another flow keeps full (a CUBIC or
// BBR download sharing the bottleneck); the cap and the drains then
// stand down for bbrMinRTTInterval, or the flow would yield the link to
// it (11 % beside kernel BBR on a lossless 100 ms path before, 42 %
// after; 50 % without any cap).
func TestBBRFutileDrains(t *testing.T) {
	const (
		bw  = 0.02    // packets/µs
		rtt = 100_000 // µs
	)
	s := newBBRStream()
	s.bbr.state = bbrProbeBW
	s.bbr.bw.reset(1, bw)
	s.srtt = rtt
	s.deliveredTs = 1_000_000
	// round ends a gain-1 round carrying 0.8 of bw whose smallest RTT
	// sample was min µs, and reports whether a drain started.
	round := func(min int64) bool {
		s.deliveredTs += rtt
		s.bbr.cycleIndex = 4
		s.bbrCheckOverpacing(bbrRound{delivered: uint32(0.8 * bw * rtt), dur: rtt, standing: min > 125_000, minRTT: min, gainMin: 1, gainMax: 1})
		return s.bbr.cycleIndex == 1
	}
	if !round(160_000) {
		t.Fatal("a standing queue started no drain")
	}
	if !round(140_000) || !round(130_000) {
		t.Fatal("drains that shrank the queue stopped the next")
	}
	if !round(135_000) {
		t.Fatal("one drain that did not shrink the queue stopped the next")
	}
	if round(150_000) {
		t.Fatal("a second drain in a row that did not shrink the queue started another")
	}
	if s.bbr.bwLo != 0 {
		t.Fatalf("cap %.4f kept beside another flow's queue, want none", s.bbr.bwLo)
	}
	if round(160_000) {
		t.Fatal("a drain started while the flow stands down")
	}
	s.deliveredTs += bbrMinRTTInterval
	if !round(160_000) {
		t.Fatal("no drain once the stand-down is over")
	}
	// PROBE_RTT in between forgets the pending drain: its own drain would
	// count as futile or not by chance.
	s.bbr.futileDrains = 1
	s.bbr.state = bbrProbeRTT
	s.bbrCheckOverpacing(bbrRound{})
	s.bbr.state = bbrProbeBW
	round(160_000)
	if s.bbr.futileDrains != 0 || s.deliveredTs < s.bbr.yieldUntil {
		t.Fatal("a drain before PROBE_RTT counted after it")
	}
}

// TestBBRProbeCycles: the gain cycle probes for bandwidth every third or
// fourth cycle (22 or 29 phases: a cycle without the probe has 7), and
// every cycle has its 0.75 phase.
func TestBBRProbeCycles(t *testing.T) {
	s := newBBRStream()
	s.bbrResetProbeBW()
	gaps := map[int]int{}
	last, sinceDrain := -1, 0
	for i := range 8 * 200 {
		prev := s.bbr.cycleIndex
		s.bbrAdvanceCycle()
		ci := s.bbr.cycleIndex
		switch {
		case prev == bbrCycleLen-1 && ci > 1, prev != bbrCycleLen-1 && ci != prev+1:
			t.Fatalf("phase %d followed %d", ci, prev)
		case ci == 0:
			if last >= 0 {
				gaps[i-last]++
			}
			last = i
		}
		sinceDrain++
		if bbrPacingGain[ci] < 1 {
			sinceDrain = 0
		}
		if sinceDrain > bbrCycleLen {
			t.Fatalf("%d phases without a 0.75 phase", sinceDrain)
		}
	}
	for gap, n := range gaps {
		if gap != 22 && gap != 29 {
			t.Fatalf("probes %d phases apart (%d times), want 22 or 29: %v", gap, n, gaps)
		}
	}
	if n := gaps[22] + gaps[29]; n < 8*200/29-1 {
		t.Fatalf("%d probes in %d phases: %v", n+1, 8*200, gaps)
	}
	// A probe that raised the estimate by an eighth is followed by
	// another; one that did not, by cruise cycles.
	s.bbr.bw.reset(1, 0.01)
	s.bbrAdvanceCycle() // a probe that starts now, at 0.01
	for s.bbr.cycleIndex != 0 {
		s.bbrAdvanceCycle()
	}
	for _, c := range []struct {
		bw    float64
		probe bool
	}{{0.0125, true}, {0.0145, true}, {0.0150, false}} {
		s.bbr.bw.reset(1, c.bw)
		for range bbrCycleLen {
			s.bbrAdvanceCycle()
		}
		if got := s.bbr.cycleIndex == 0; got != c.probe {
			t.Fatalf("after a probe that took the estimate to %.4f: probing %v, want %v", c.bw, got, c.probe)
		}
	}
	// toNextCycle advances to the first phase of the next gain cycle.
	toNextCycle := func() {
		for done := false; !done; {
			done = s.bbr.cycleIndex == bbrCycleLen-1
			s.bbrAdvanceCycle()
		}
	}
	// Under a pacing cap every cycle probes: only a probe lifts it.
	s.bbr.bwLo = 0.0142
	for range 3 {
		toNextCycle()
		if s.bbr.cycleIndex != 0 {
			t.Fatal("a cycle under a pacing cap did not probe")
		}
	}
	// A cap within a twentieth of the max filter's is not one.
	s.bbr.bwLo = 0.0145
	toNextCycle()
	if s.bbr.cycleIndex == 0 {
		t.Fatal("a cap at 0.97 of the max filter's made the next cycle probe")
	}
	if bbrBWFilterRounds < 29+2 {
		t.Fatalf("the max filter's %d rounds do not span the 29 phases between probes and two", bbrBWFilterRounds)
	}
}

// TestBBRStandingQueue: a round stands in a queue when its smallest RTT
// sample is a quarter over the smallest of recent rounds' smallest, not
// over the min RTT, which one lucky sample on a jittery path sets.
func TestBBRStandingQueue(t *testing.T) {
	s := newBBRStream()
	now := int64(bbrT0)
	s.bbr.minRTT = 62_000 // one sample at the jitter's low end
	for i, c := range []struct {
		min  int64 // µs
		want bool
	}{
		{80_000, false}, // the first round only sets the yardstick
		{85_000, false},
		{76_000, false},
		{84_000, false}, // a quarter over the min RTT, not over 76 ms
		{95_000, false}, // 76 + 19 ms: not over
		{96_000, true},
		{170_000, true},
		{-1, false}, // a round without an RTT sample
	} {
		now += 100_000
		if got := s.bbrStandingQueue(c.min, now); got != c.want {
			t.Fatalf("round %d, smallest RTT %d µs: standing %v, want %v", i, c.min, got, c.want)
		}
	}
	// After bbrMinRTTInterval without a round that low, the yardstick
	// follows the path's newer, longer RTT.
	for range 3 {
		now += bbrMinRTTInterval / 2
		s.bbrStandingQueue(120_000, now)
	}
	if s.bbrStandingQueue(140_000, now+100_000) {
		t.Fatal("a round 20 ms over a path that has been at 120 ms for 10 s counted as standing")
	}
}

// A Write waiting for room under the notsent bound is not the application
// running dry: a transmit that empties the queue meanwhile must not mark
// the flow app-limited (the waiting writer's goroutine is merely late),
// while one with no writer waiting does. The flag is up exactly while a
// Write waits, including one that ends on its deadline.
func TestAppLimitedNotWhileWriterWaits(t *testing.T) {
	s := &Stream{mtu: mtuBase, raddr: netip.MustParseAddrPort("192.0.2.1:1"), cwnd: initialCwnd, delivered: 100}
	s.wblocked.Store(true)
	s.rateCheckAppLimited()
	if s.appLimited != 0 {
		t.Fatalf("marked app-limited (%d) while a writer waits for room", s.appLimited)
	}
	s.wblocked.Store(false)
	s.rateCheckAppLimited()
	if s.appLimited == 0 {
		t.Fatal("an empty queue with no writer waiting is not marked app-limited")
	}

	sa, sb := udpSocket(t), udpSocket(t)
	a, b := pair(t, sa, sb, 1, 2)
	defer a.Close()
	defer b.Close()
	// b never reads: a's window and then its notsent bound fill, and
	// its Write waits until the deadline.
	a.SetWriteDeadline(time.Now().Add(2 * time.Second))
	done := make(chan error, 1)
	go func() {
		_, err := a.Write(make([]byte, 64<<20))
		done <- err
	}()
	if !waitFor(2*time.Second, a.wblocked.Load) {
		t.Fatal("a Write held up by the notsent bound never set wblocked")
	}
	if err := <-done; err == nil {
		t.Fatal("a 64 MiB Write to a reader that never reads returned no error")
	}
	if a.wblocked.Load() {
		t.Fatal("wblocked still set after the Write returned on its deadline")
	}
}

// TestBBRProbeRTTSkippedIfSimilar: when the min RTT expires in PROBE_BW,
// a sample since it was taken that came within an eighth of it (the gain
// cycle's drain found the path's RTT again) renews it without PROBE_RTT,
// which would idle the flow for a round trip and 200 ms; samples all
// further above it (another flow's queue, a longer route) still lead to
// PROBE_RTT, and so does an expiry outside PROBE_BW.
func TestBBRProbeRTTSkippedIfSimilar(t *testing.T) {
	const minRTT = 100_000 // µs
	for _, c := range []struct {
		name      string
		state     int
		sample    int64 // every sample after the min RTT's
		wantState int
		wantMin   int64
	}{
		{"drained to the path's RTT", bbrProbeBW, 100_300, bbrProbeBW, 100_300},
		{"within an eighth", bbrProbeBW, minRTT + minRTT/8, bbrProbeBW, minRTT + minRTT/8},
		{"a queue that never drains", bbrProbeBW, minRTT + minRTT/8 + 1, bbrProbeRTT, minRTT + minRTT/8 + 1},
		{"a longer route", bbrProbeBW, 150_000, bbrProbeRTT, 150_000},
		{"in STARTUP", bbrStartup, 100_300, bbrProbeRTT, 100_300},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newBBRStream()
			now := int64(bbrT0)
			s.bbr.state = c.state
			s.bbrUpdateMinRTT(&rateSample{rtt: minRTT}, now)
			if s.bbr.minRTT != minRTT {
				t.Fatalf("min RTT %d after the first sample, want %d", s.bbr.minRTT, minRTT)
			}
			// A sample every round trip up to just past the interval.
			for now < bbrT0+bbrMinRTTInterval+minRTT {
				now += minRTT
				s.inflight.n = 100 // busy: PROBE_RTT does not end at once
				s.bbrUpdateMinRTT(&rateSample{rtt: c.sample}, now)
				if s.bbr.state != c.state {
					break
				}
			}
			if s.bbr.state != c.wantState {
				t.Fatalf("state %d at %d µs, want %d", s.bbr.state, now-bbrT0, c.wantState)
			}
			if now <= bbrT0+bbrMinRTTInterval {
				t.Fatalf("left state %d after %d µs, before the min RTT expired", c.state, now-bbrT0)
			}
			if s.bbr.minRTT != c.wantMin || s.bbr.minRTTStamp != now {
				t.Fatalf("min RTT %d taken at %d µs, want %d taken at %d", s.bbr.minRTT, s.bbr.minRTTStamp-bbrT0, c.wantMin, now-bbrT0)
			}
		})
	}
}

// TestBBRRecoveryWindowFloor: entering loss recovery sets the window to
// what is in flight plus what this ACK acknowledged (packet conservation),
// but once the bandwidth is known never below the path's BDP: a warm
// session's download that loses a packet while its inflight is still
// ramping up from idle would otherwise go out in bursts with idle gaps
// for rounds. Before the bandwidth is known, conservation is as it was.
func TestBBRRecoveryWindowFloor(t *testing.T) {
	const (
		bw     = 0.0084 // packets/µs
		minRTT = 100_000
		bdp    = 840 // packets
	)
	for _, full := range []bool{true, false} {
		s := newBBRStream()
		s.bbr.bw.reset(1, bw)
		s.bbr.minRTT = minRTT
		s.bbr.fullBWReached = full
		s.cwnd = 1700
		s.inflight.n = 200
		s.caState = caRecovery
		cwnd, cons := s.bbrRecoverOrRestore(&rateSample{losses: 1}, 10)
		want := uint32(210)
		if full {
			want = bdp
		}
		if !cons || cwnd != want {
			t.Errorf("full bandwidth %v: entering recovery with 200 in flight: window %d (conservation %v), want %d", full, cwnd, cons, want)
		}
	}
}
