package udx

import "math/rand/v2"

// Congestion control: BBR v1 as libudx runs it (src/udx_bbr.c,
// src/udx_rate.c), with time kept in microseconds instead of libudx's
// milliseconds. On loopback and LAN paths the RTT is far below 1 ms, where
// millisecond arithmetic rounds every sample to 0 or 1; microseconds keep
// the bandwidth and min-RTT estimates meaningful there. Bandwidth is in
// packets per microsecond, cwnd in packets, pacing in bytes per microsecond.
//
// Three changes, none of which touches the wire format: STARTUP also
// ends on a round of heavy loss, over a standing queue or of more than an
// eighth of its packets (bbrCheckStartupLoss); PROBE_BW stops pacing faster than the path
// carries, and drains the queue it built, when delay jitter inflates the
// bandwidth samples (bbrCheckOverpacing, bbrStandingQueue); and it probes
// for bandwidth every third or fourth gain cycle (every one while probes
// find more or a cap is in force), as BBR v2 and v3 probe less often than
// v1, so the probes' queue is not the bottleneck's usual state
// (bbrAdvanceCycle).

const (
	bbrStartup = iota
	bbrDrain
	bbrProbeBW
	bbrProbeRTT
)

const (
	bbrCycleLen = 8
	// Only every third or fourth gain cycle, drawn at random, probes for
	// bandwidth; the others skip the 1.25 phase and start at the 0.75
	// one (bbrAdvanceCycle). The max filter spans the longest run of
	// phases from one probe to the next (29) and two rounds, as v1's 10
	// rounds span its 8.
	bbrProbeCyclesMin  = 3
	bbrProbeCyclesMax  = 4
	bbrBWFilterRounds  = bbrProbeCyclesMax*bbrCycleLen + 2
	bbrStartupBWRounds = 10         // how long STARTUP's samples stay in it, from its end
	bbrProbeGrowth     = 1.125      // a probe that found this much more probes again
	bbrMinRTTInterval  = 10_000_000 // µs
	bbrProbeRTTMode    = 200_000    // µs
	// PROBE_BW skips PROBE_RTT when the min RTT expires if an RTT sample
	// since it was taken came within an eighth of it (Chromium's QUIC
	// BBR does so for app-limited flows, kSimilarMinRttThreshold): the
	// gain cycle's drains empty the flow's own queue, so a busy flow
	// alone on its bottleneck sees the path's RTT every few seconds.
	// A flow beside others that keep a queue, or on a path whose RTT
	// grew, sees nothing that close and still probes. Either way the min
	// RTT starts again from the sample at hand: keeping the interval's
	// smallest instead pinned mobile's (80 ± 20 ms) at its jitter's low
	// end, its window with it, and cost it 5-10 % of its goodput.
	bbrSimilarRTTDiv   = 8
	bbrPacingMargin    = 0.99
	bbrHighGain        = 2.88539 // 2/ln 2
	bbrDrainGain       = 1 / 2.88539
	bbrCwndGain        = 2.0
	bbrCwndMinTarget   = 4
	bbrFullBWThresh    = 1.25
	bbrFullBWCount     = 3
	bbrExtraAckedRTTs  = 5
	bbrExtraAckedMaxUs = 100_000
	// STARTUP also ends after a round that lost more than 1/50 of its
	// packets (BBRv2's 2%), at least bbrStartupLossMin of them, while a
	// queue stood the whole round: its smallest RTT sample exceeded the
	// min RTT by a quarter (and 2 ms, for jitter). See bbrCheckStartupLoss
	// and bbrTrackRound.
	bbrStartupLossDiv = 50
	bbrStartupLossMin = 8
	// Or after a round that lost more than an eighth of its packets, at
	// least bbrStartupHeavyLossMin, queue or not.
	bbrStartupHeavyLossDiv = 8
	bbrStartupHeavyLossMin = 32
	bbrStartupQueueDiv     = 4
	bbrStartupQueueMinUs   = 2_000
	// A PROBE_BW round paced at gain 1 that ended with a standing queue
	// and whose packets left the bottleneck (delivered or lost) at less
	// than 19/20 of its pacing rate caps the pacing bandwidth at that
	// rate (bwLo): by at most a tenth per round (bbrOverpaceStep), never
	// below 3/4 of the max filter's (bbrOverpaceFloor). A bandwidth
	// probe's round that carries 21/20 of the cap raises it by a
	// twentieth. See bbrCheckOverpacing.
	bbrOverpaceDiv   = 20
	bbrProbeLiftNum  = 21
	bbrProbeLiftDiv  = 20
	bbrOverpaceStep  = 0.9
	bbrOverpaceFloor = 0.75
	// A drain that a standing queue started lasts until inflight is down
	// to a BDP, for at most bbrDrainRTTsMax min RTTs.
	bbrDrainRTTsMax = 3
	// Two drains in a row that left a standing queue as it was mean the
	// queue is another flow's; the cap and the drains then stand down
	// for bbrMinRTTInterval.
	bbrFutileDrains = 2
	initialCwnd     = 10
)

var bbrPacingGain = [bbrCycleLen]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

// minmax is Kathleen Nichols' windowed min/max filter over three samples,
// the same estimator libudx's win_filter and Linux's lib/minmax use.
type minmax struct {
	s [3]struct {
		t int64
		v float64
	}
}

func (m *minmax) get() float64 { return m.s[0].v }

func (m *minmax) reset(t int64, v float64) float64 {
	for i := range m.s {
		m.s[i].t, m.s[i].v = t, v
	}
	return v
}

func (m *minmax) subwin(win, t int64, v float64) float64 {
	dt := t - m.s[0].t
	switch {
	case dt > win:
		m.s[0], m.s[1] = m.s[1], m.s[2]
		m.s[2].t, m.s[2].v = t, v
		if t-m.s[0].t > win {
			m.s[0], m.s[1] = m.s[1], m.s[2]
			m.s[2].t, m.s[2].v = t, v
		}
	case m.s[1].t == m.s[0].t && dt > win/4:
		m.s[1].t, m.s[1].v = t, v
		m.s[2] = m.s[1]
	case m.s[2].t == m.s[1].t && dt > win/2:
		m.s[2].t, m.s[2].v = t, v
	}
	return m.s[0].v
}

// expireIn makes every sample the filter holds leave its window (win)
// keep after t, unless it leaves sooner.
func (m *minmax) expireIn(win, t, keep int64) {
	for i := range m.s {
		m.s[i].t = min(m.s[i].t, t+keep-win)
	}
}

func (m *minmax) runningMax(win, t int64, v float64) float64 {
	if v >= m.s[0].v || t-m.s[2].t > win {
		return m.reset(t, v)
	}
	if v >= m.s[1].v {
		m.s[1].t, m.s[1].v = t, v
		m.s[2] = m.s[1]
	} else if v >= m.s[2].v {
		m.s[2].t, m.s[2].v = t, v
	}
	return m.subwin(win, t, v)
}

func (m *minmax) runningMin(win, t int64, v float64) float64 {
	if v <= m.s[0].v || t-m.s[2].t > win {
		return m.reset(t, v)
	}
	if v <= m.s[1].v {
		m.s[1].t, m.s[1].v = t, v
		m.s[2] = m.s[1]
	} else if v <= m.s[2].v {
		m.s[2].t, m.s[2].v = t, v
	}
	return m.subwin(win, t, v)
}

// rateSample is one ACK's delivery-rate measurement (draft-cheng-iccrg-delivery-rate-estimation).
type rateSample struct {
	priorDelivered uint32
	priorTime      int64
	seq            uint32
	interval       int64
	delivered      int64
	ackedSacked    uint32
	losses         uint32
	rtt            int64
	isAppLimited   bool
	isRetrans      bool
}

type bbr struct {
	state            int
	bw               minmax // packets/µs over rounds
	rttCount         int64
	nextRTTDelivered uint32
	roundStart       bool
	prevCA           uint8
	usePacketCons    bool
	priorCwnd        uint32
	minRTT           int64 // µs, -1 unknown
	minRTTStamp      int64
	sinceStampMin    int64 // µs, the smallest RTT sample since minRTTStamp, -1 none
	probeRTTDone     int64
	probeRTTRound    bool
	idleRestart      bool
	fullBWReached    bool
	fullBW           float64
	fullBWCount      int
	cycleIndex       int
	cycleStamp       int64
	cruiseCycles     int     // gain cycles to run before the next probe
	probeBW          float64 // max filter when the last probe began, 0: judged
	pacingGain       float64
	cwndGain         float64
	hasSeenRTT       bool
	ackEpochStart    int64
	ackEpochAcked    uint32
	extraAckedRTTs   int
	extraAckedIdx    int
	extraAcked       [2]uint32
	// The current round's accounting for bbrTrackRound:
	// delivered and lostCount when it began, its smallest RTT sample.
	roundDelivered0 uint32
	roundLost0      uint32
	roundMinRTT     int64 // µs, -1 none yet
	// roundMins is the smallest of the recent rounds' smallest RTT
	// samples (over bbrMinRTTInterval): the path's RTT without a
	// queue as a busy flow sees it (see bbrTrackRound).
	roundMins minmax
	// When the round began (deliveredTs), the smallest and largest pacing
	// gain during it; and bbrCheckOverpacing's cap on the pacing
	// bandwidth (packets/µs, 0: none).
	roundTs0     int64
	roundGainMin float64
	roundGainMax float64
	bwLo         float64
	// bbrCheckOverpacing's drains: the smallest RTT of the round that
	// last started one (µs, 0: none pending), how many drains in a row
	// left the queue as it was, and until when (deliveredTs) the flow
	// leaves a queue that is not its own alone.
	drainMin     int64
	futileDrains int
	yieldUntil   int64
}

func (s *Stream) maxPayload() int {
	if s.raddr.Addr().Is4() {
		return s.mtu - 48
	}
	return s.mtu - 68
}

func (s *Stream) bbrInit(now int64) {
	b := &s.bbr
	*b = bbr{minRTT: -1, minRTTStamp: now, sinceStampMin: -1, prevCA: caOpen, ackEpochStart: now, roundMinRTT: -1}
	s.ssthresh = 0xffff
	b.nextRTTDelivered = s.delivered
	s.bbrInitPacingFromRTT()
	b.state = bbrStartup
	b.pacingGain, b.cwndGain = bbrHighGain, bbrHighGain
}

func (s *Stream) bbrBW() float64 { return s.bbr.bw.get() }

// bbrPaceBW is the bandwidth the sender paces at: the max filter's, unless
// rounds that delivered less than it capped it (bwLo).
func (s *Stream) bbrPaceBW() float64 {
	bw := s.bbrBW()
	if lo := s.bbr.bwLo; lo > 0 && lo < bw {
		return lo
	}
	return bw
}

func (s *Stream) bbrRateFor(bw, gain float64) float64 {
	r := bw * float64(s.maxPayload()) * gain * bbrPacingMargin
	if r <= 0 {
		r = 1e-3
	}
	return r
}

func (s *Stream) bbrInitPacingFromRTT() {
	srtt := s.srtt
	if srtt > 0 {
		s.bbr.hasSeenRTT = true
	} else {
		srtt = 1000 // libudx assumes 1 ms before the first sample
	}
	s.pacingRate = s.bbrRateFor(float64(s.cwnd)/float64(srtt), bbrHighGain)
}

func (s *Stream) bbrSetPacingRate(bw, gain float64) {
	r := s.bbrRateFor(bw, gain)
	if !s.bbr.hasSeenRTT && s.srtt > 0 {
		s.bbrInitPacingFromRTT()
	}
	if s.bbr.fullBWReached || r > s.pacingRate {
		s.pacingRate = r
	}
}

func (s *Stream) bbrSaveCwnd() {
	if s.bbr.prevCA < caRecovery && s.bbr.state != bbrProbeRTT {
		s.bbr.priorCwnd = s.cwnd
	} else {
		s.bbr.priorCwnd = max(s.bbr.priorCwnd, s.cwnd)
	}
}

func (s *Stream) bbrOnTransmitStart(now int64) {
	if s.appLimited != 0 {
		s.bbr.idleRestart = true
		s.bbr.bwLo = 0
		s.bbr.ackEpochStart = now
		s.bbr.ackEpochAcked = 0
		switch s.bbr.state {
		case bbrProbeBW:
			s.bbrSetPacingRate(s.bbrPaceBW(), 1)
		case bbrProbeRTT:
			s.bbrCheckProbeRTTDone(now)
		}
	}
}

func (s *Stream) bbrBDP(bw, gain float64) uint32 {
	if s.bbr.minRTT < 0 {
		return initialCwnd
	}
	return uint32(bw * float64(s.bbr.minRTT) * gain)
}

func (s *Stream) bbrAggregationCwnd() uint32 {
	if !s.bbr.fullBWReached {
		return 0
	}
	maxAggr := uint32(s.bbrBW() * bbrExtraAckedMaxUs)
	return min(max(s.bbr.extraAcked[0], s.bbr.extraAcked[1]), maxAggr)
}

func (s *Stream) bbrRecoverOrRestore(rs *rateSample, acked uint32) (uint32, bool) {
	prev, state, cwnd := s.bbr.prevCA, s.caState, s.cwnd
	if rs.losses > 0 {
		cwnd = uint32(max(int64(cwnd)-int64(rs.losses), 1))
	}
	if state == caRecovery && prev != caRecovery {
		s.bbr.usePacketCons = true
		s.bbr.nextRTTDelivered = s.delivered
		cwnd = uint32(s.inflight.n) + acked
		if s.bbr.fullBWReached {
			// Not below the path's BDP: a loss early in a download that
			// starts on a warm session (inflight still ramping up from
			// idle) otherwise held the window at what little was in
			// flight, and the next rounds went out in bursts with idle
			// gaps between; the pacing rate, not the window, keeps the
			// queue down once the bandwidth is known.
			cwnd = max(cwnd, s.bbrBDP(s.bbrBW(), 1))
		}
	} else if prev >= caRecovery && state == caOpen {
		cwnd = max(cwnd, s.bbr.priorCwnd)
		s.bbr.usePacketCons = false
	}
	s.bbr.prevCA = state
	if s.bbr.usePacketCons {
		return max(cwnd, uint32(s.inflight.n)+acked), true
	}
	return cwnd, false
}

func (s *Stream) bbrSetCwnd(rs *rateSample, acked uint32, bw, gain float64) {
	cwnd := s.cwnd
	if acked > 0 {
		var done bool
		if cwnd, done = s.bbrRecoverOrRestore(rs, acked); !done {
			target := s.bbrBDP(bw, gain) + s.bbrAggregationCwnd()
			if s.bbr.fullBWReached {
				cwnd = min(cwnd+acked, target)
			} else if cwnd < target || s.delivered < 10 {
				cwnd += acked
			}
			cwnd = max(cwnd, bbrCwndMinTarget)
		}
	}
	s.cwnd = cwnd
	if s.bbr.state == bbrProbeRTT {
		s.cwnd = min(s.cwnd, bbrCwndMinTarget)
	}
}

func (s *Stream) bbrIsNextCyclePhase(rs *rateSample) bool {
	full := s.deliveredTs-s.bbr.cycleStamp > s.bbr.minRTT
	if s.bbr.pacingGain == 1 {
		return full
	}
	inflight := uint32(s.inflight.n)
	if s.bbr.pacingGain > 1 {
		return full && (rs.losses > 0 || inflight > s.bbrBDP(s.bbrPaceBW(), s.bbr.pacingGain))
	}
	if s.bbr.drainMin > 0 {
		// A drain that a standing queue started (bbrCheckOverpacing)
		// runs until the queue is gone, not for one min RTT only: at
		// 0.75 a min RTT takes a quarter of one off the queue, and
		// after STARTUP on mobile the queue stood at 50-90 ms, which
		// one-round drains took 2 s to clear.
		return inflight <= s.bbrBDP(s.bbrPaceBW(), 1) || s.deliveredTs-s.bbr.cycleStamp > bbrDrainRTTsMax*s.bbr.minRTT
	}
	return full || inflight <= s.bbrBDP(s.bbrPaceBW(), 1)
}

// bbrAdvanceCycle moves to the gain cycle's next phase. BBR v1 probes
// for bandwidth once a cycle of 8 rounds: its 1.25 phase adds a quarter
// of a BDP to the bottleneck's queue and the next phase, at 0.75, takes it
// back, so a queue that rises to a quarter of the min RTT and falls again
// stands through 2 rounds of 8. Its 95th percentile is then 4/5 of that
// peak whatever else the flow does: 20 ms on a 100 ms path (kernel BBR's
// measured 20-23 ms on the lab's transatlantic link), and every echo that
// a connection sharing the bottleneck times inside those rounds waits for
// it too. BBR v2 and v3 probe every 2-3 s for the same reason. Here only
// every third or fourth cycle, drawn at random so that flows sharing a
// bottleneck do not probe in step, starts with the 1.25 phase; the others
// start with the 0.75 phase, which ends as soon as the flow's inflight is
// down to a BDP, so it drains whatever queue the cruise let build (the
// max filter runs over the estimate by the sample scatter) and costs
// nothing when there is none. The probe and its drain then take a
// tenth of the time or less. A probe that raised the estimate by an
// eighth or more found a path faster than the flow thought, as after a
// STARTUP that loss or jitter ended early, and the next cycle probes
// again: a climb at one probe every 22 or 29 rounds (a cycle without the
// probe has 7 phases) took mobile's 6 s download from 0.86 of the link
// to 0.75-0.87. So does a flow whose pacing bbrCheckOverpacing capped
// clearly under the max filter (bbrCapBinds), since only a probe's round
// lifts the cap: on a path that jitters (where the cap is set), rare
// probes kept the pacing under the path's rate.
func (s *Stream) bbrAdvanceCycle() {
	b := &s.bbr
	b.cycleIndex = (b.cycleIndex + 1) & (bbrCycleLen - 1)
	b.cycleStamp = s.deliveredTs
	if b.cycleIndex != 0 {
		return
	}
	grew := b.probeBW > 0 && s.bbrBW() >= b.probeBW*bbrProbeGrowth
	b.probeBW = 0
	if b.cruiseCycles > 0 && !grew && !s.bbrCapBinds() {
		b.cruiseCycles--
		b.cycleIndex = 1
		return
	}
	b.probeBW = s.bbrBW()
	b.cruiseCycles = cruiseCycles()
}

// cruiseCycles draws how many gain cycles go without a probe before the
// next one does (see bbrAdvanceCycle).
func cruiseCycles() int {
	return bbrProbeCyclesMin - 1 + rand.IntN(bbrProbeCyclesMax-bbrProbeCyclesMin+1)
}

func (s *Stream) bbrResetProbeBW() {
	s.bbr.state = bbrProbeBW
	// libudx starts every flow at phase 3 (then advances) where Linux picks a
	// random phase; kept for identical behaviour.
	s.bbr.cycleIndex = 3
	s.bbrAdvanceCycle()
}

func (s *Stream) bbrResetMode() {
	if !s.bbr.fullBWReached {
		s.bbr.state = bbrStartup
	} else {
		s.bbrResetProbeBW()
	}
}

func (s *Stream) bbrUpdateBW(rs *rateSample) {
	s.bbr.roundStart = false
	if rs.delivered < 0 || rs.interval <= 0 {
		return
	}
	if seqDiff(rs.priorDelivered, s.bbr.nextRTTDelivered) >= 0 {
		s.bbr.nextRTTDelivered = s.delivered
		s.bbr.rttCount++
		s.bbr.roundStart = true
		s.bbr.usePacketCons = false
	}
	bw := float64(rs.delivered) / float64(rs.interval)
	if !rs.isAppLimited || bw >= s.bbrBW() {
		s.bbr.bw.runningMax(bbrBWFilterRounds, s.bbr.rttCount, bw)
	}
}

func (s *Stream) bbrUpdateAckAggregation(rs *rateSample) {
	b := &s.bbr
	if rs.ackedSacked == 0 || rs.delivered < 0 || rs.interval <= 0 {
		return
	}
	if b.roundStart {
		b.extraAckedRTTs = min(0xff, b.extraAckedRTTs+1)
		if b.extraAckedRTTs >= bbrExtraAckedRTTs {
			b.extraAckedRTTs = 0
			b.extraAckedIdx ^= 1
			b.extraAcked[b.extraAckedIdx] = 0
		}
	}
	epoch := max(s.deliveredTs-b.ackEpochStart, 0)
	expected := uint32(s.bbrBW() * float64(epoch))
	if b.ackEpochAcked <= expected || uint64(b.ackEpochAcked)+uint64(rs.ackedSacked) >= 1<<32-1 {
		b.ackEpochAcked = 0
		b.ackEpochStart = s.deliveredTs
		expected = 0
	}
	b.ackEpochAcked += rs.ackedSacked
	extra := min(b.ackEpochAcked-expected, s.cwnd)
	if extra > b.extraAcked[b.extraAckedIdx] {
		b.extraAcked[b.extraAckedIdx] = extra
	}
}

func (s *Stream) bbrCheckFullBW(rs *rateSample) {
	b := &s.bbr
	if b.fullBWReached || !b.roundStart || rs.isAppLimited {
		return
	}
	if s.bbrBW() >= b.fullBW*bbrFullBWThresh {
		b.fullBW = s.bbrBW()
		b.fullBWCount = 0
		return
	}
	b.fullBWCount++
	b.fullBWReached = b.fullBWCount >= bbrFullBWCount
}

// bbrRound is a finished round as the whole-round checks see it: the
// packets it delivered and lost, its length in µs (deliveredTs to
// deliveredTs; 0 for the stream's first), whether a queue stood all round
// measured two ways (queued: its smallest RTT sample a quarter and 2 ms
// over the min RTT, which STARTUP's loss exit uses before there are
// drained rounds to compare with; standing: the same over recent rounds'
// smallest samples, see bbrStandingQueue), its smallest RTT sample, and
// the smallest and largest pacing gain during it.
type bbrRound struct {
	delivered, lost  uint32
	dur              int64
	queued           bool
	standing         bool
	minRTT           int64 // µs, the round's smallest sample, -1 none
	gainMin, gainMax float64
}

// bbrTrackRound runs on every ACK: it keeps the round's smallest RTT
// sample and, when a round has ended, hands it to the checks that judge
// whole rounds, then starts the next one's accounting.
func (s *Stream) bbrTrackRound(rs *rateSample) {
	b := &s.bbr
	if rs.rtt >= 0 && (b.roundMinRTT < 0 || rs.rtt < b.roundMinRTT) {
		b.roundMinRTT = rs.rtt
	}
	if !b.roundStart {
		return
	}
	r := bbrRound{
		delivered: s.delivered - b.roundDelivered0,
		lost:      s.lostCount - b.roundLost0,
		queued:    queuedOver(b.roundMinRTT, b.minRTT),
		gainMin:   b.roundGainMin,
		gainMax:   b.roundGainMax,
		minRTT:    b.roundMinRTT,
	}
	if b.roundTs0 != 0 {
		r.dur = s.deliveredTs - b.roundTs0
	}
	if r.delivered >= 2*initialCwnd {
		r.standing = s.bbrStandingQueue(b.roundMinRTT, s.deliveredTs)
	}
	s.bbrCheckStartupLoss(r)
	s.bbrCheckOverpacing(r)
	b.roundDelivered0, b.roundLost0, b.roundMinRTT = s.delivered, s.lostCount, -1
	b.roundTs0, b.roundGainMin, b.roundGainMax = s.deliveredTs, b.pacingGain, b.pacingGain
}

// bbrStandingQueue tells whether a queue stood all through a round whose
// smallest RTT sample was roundMin, and remembers that sample. The min RTT
// cannot be the yardstick on a path whose delay jitters while it keeps
// packets in order (mobile links): one lucky sample among thousands sets
// it, 15-20 % below what any busy round sees even with the bottleneck's
// queue empty, since a packet waits for those ahead of it however short
// its own delay. So a round is measured against the smallest of the
// recent rounds' smallest samples (over bbrMinRTTInterval), which the
// 0.75 phases' drained rounds keep at the path's empty-queue RTT; a
// quarter of it (at least 2 ms) over means a standing queue.
func (s *Stream) bbrStandingQueue(roundMin, now int64) bool {
	if roundMin <= 0 {
		return false
	}
	b := &s.bbr
	base := int64(b.roundMins.get())
	if base <= 0 {
		b.roundMins.reset(now, float64(roundMin))
		return false
	}
	b.roundMins.runningMin(bbrMinRTTInterval, now, float64(roundMin))
	return queuedOver(roundMin, base)
}

// queuedOver tells whether a round whose smallest RTT sample was roundMin
// stood in a queue all through, against a path RTT of base (µs, 0 or
// less: unknown): a quarter over it, and at least 2 ms for jitter.
func queuedOver(roundMin, base int64) bool {
	return base > 0 && roundMin > base+max(base/bbrStartupQueueDiv, bbrStartupQueueMinUs)
}

// bbrCheckStartupLoss ends STARTUP after a round that overflowed the
// bottleneck: more than 2% of its packets lost while a queue stood all
// round. The bandwidth plateau test (bbrCheckFullBW) cannot see this when
// the flow is app-limited: a window above udx (a yamux stream's) runs out
// while STARTUP's 2.89x cwnd is still filling, the send queue drains,
// every sample is marked app-limited and skipped, and STARTUP paces at
// 2.89x the bottleneck for good, dropping packets at the router round
// after round. Loss alone is not enough, since random loss (wifi, mobile)
// would end STARTUP before the pipe is full; a standing queue is what a
// sender that overshoots builds.
func (s *Stream) bbrCheckStartupLoss(r bbrRound) {
	b := &s.bbr
	if b.state != bbrStartup || b.fullBWReached {
		return
	}
	n := uint64(r.delivered + r.lost)
	if r.queued && r.lost >= bbrStartupLossMin && uint64(r.lost)*bbrStartupLossDiv > n {
		b.fullBWReached = true
	}
	// A round that lost more than an eighth of its packets overflowed
	// the bottleneck whether or not a queue stood all through it: after
	// such a loss the sender's recovery lets the queue run empty, so
	// some of the round's RTT samples see none. On transatlantic a cold
	// STARTUP went on that way for 2 s, losing 787-862 packets (30 %)
	// every other round with the round's smallest RTT at the path's, and
	// the link's queue stood at 90-100 ms through the download's second
	// half. Random loss does not come near it (wifi-bad's bursts are 3 %
	// on average), nor a few packets lost from a small round.
	if r.lost >= bbrStartupHeavyLossMin && uint64(r.lost)*bbrStartupHeavyLossDiv > n {
		b.fullBWReached = true
	}
}

// bbrCheckOverpacing runs at the end of each round and keeps PROBE_BW from
// pacing faster than the path carries. The max filter takes the highest
// delivery-rate sample of ten rounds, and when ACKs come back bunched
// (delay jitter on a path that keeps packets in order, as mobile links
// do) single samples run 10-15 % over the bottleneck. Pacing at that rate
// builds a queue in every gain-1 round that only cwnd (2 BDP plus the
// aggregation allowance) stops, so the bottleneck's buffer stays full and
// every other connection crossing it waits: on the lab's mobile link a
// second connection's echo took 2.3 RTT at p95 beside a download, kernel
// BBR's as much. Over a whole round, what left the bottleneck (delivered
// or lost: random loss is not a rate limit) is what it carried, the
// bunching cancelled out. So when a gain-1 round ends with a queue that
// stood all round (bbrStandingQueue; a sender held back by its CPU or its
// application builds none):
//   - if it carried clearly less than its pacing rate, the pacing
//     bandwidth is capped there, by at most a tenth per round and never
//     below 3/4 of the max filter's, so a mismeasured round costs little;
//   - the gain cycle restarts at its 0.75 phase, which drains a quarter
//     of a min RTT of queue, and the next bandwidth probe comes two or
//     three cycles after it (bbrAdvanceCycle); a cap alone, at the rate
//     the path carries, would keep the queue it found for good.
//
// A queue is not always this flow's: a CUBIC download sharing the
// bottleneck fills its buffer, kernel BBR keeps up to a BDP in it, and a
// flow that capped and drained beside them would hand them the link
// (on a lossless 100 ms path: 19 % of it beside CUBIC, 11 % beside BBR).
// So the first gain-1 round after a drain checks that the queue shrank;
// after bbrFutileDrains drains in a row that left it as it was, the cap
// and the drains stand down for bbrMinRTTInterval and the flow competes
// as plain BBR does (58 % and 42 % there).
//
// A bandwidth probe whose round carries 21/20 of the cap raises the cap
// by a twentieth (and drops it once that reaches the max filter), so a
// flow still finds a faster path, a twentieth a probe, while a probe's
// one lucky round cannot undo the cap: a round's rate is its packets
// over the time between two ACKs, each late by the path's jitter, and on
// mobile single rounds of a flow at the path's 2.42 MB/s measured up to
// 2.69. Raised to that, the cap paced 11 % over the path and a 50 ms
// queue stood until the next drain.
// Rounds that span an idle spell or carry few packets measure the
// application, not the path, and are skipped. Those two tests are all
// that keeps app-limited rounds out: a tunnel's stream is marked
// app-limited whenever its 2 ms send queue runs dry for an instant, which
// would leave no round to judge.
func (s *Stream) bbrCheckOverpacing(r bbrRound) {
	b := &s.bbr
	if b.state != bbrProbeBW {
		// STARTUP or DRAIN: no cap. STARTUP, DRAIN or PROBE_RTT: no
		// drain to judge when PROBE_BW resumes (PROBE_RTT's own drain
		// would look futile or not by chance). PROBE_RTT keeps the
		// cap: the path is the one it was measured on, and without it
		// the flow left PROBE_RTT at the max filter's rate (on mobile
		// 8-13 % over the path's), built a queue again, and the first
		// drains against it could look futile, handing the link's
		// queue to plain BBR for 10 s.
		if b.state != bbrProbeRTT {
			b.bwLo = 0
		}
		b.drainMin, b.futileDrains = 0, 0
		return
	}
	if r.dur <= 0 || r.dur > 2*s.srtt || r.delivered < 2*initialCwnd {
		return
	}
	if s.deliveredTs < b.yieldUntil {
		b.bwLo = 0
		return
	}
	rate := max(float64(r.delivered+r.lost)/float64(r.dur), s.bbrPaceBW()*bbrOverpaceStep, s.bbrBW()*bbrOverpaceFloor)
	if r.gainMax > 1 {
		if b.bwLo > 0 && rate*bbrProbeLiftDiv >= b.bwLo*bbrProbeLiftNum {
			rate = b.bwLo * bbrProbeLiftNum / bbrProbeLiftDiv
			b.bwLo = rate
			if rate >= s.bbrBW() {
				b.bwLo = 0
			}
		}
		return
	}
	if r.gainMin != 1 {
		return
	}
	if b.drainMin > 0 {
		// The first gain-1 round after a drain: a queue that did not
		// shrink is not this flow's (see above).
		if r.standing && r.minRTT >= b.drainMin {
			b.futileDrains++
		} else {
			b.futileDrains = 0
		}
		b.drainMin = 0
		if b.futileDrains >= bbrFutileDrains {
			b.bwLo, b.futileDrains = 0, 0
			b.yieldUntil = s.deliveredTs + bbrMinRTTInterval
			return
		}
	}
	if !r.standing {
		return
	}
	if clearlyUnder(rate, s.bbrPaceBW()) {
		b.bwLo = rate
	}
	b.cycleIndex, b.cycleStamp = 1, s.deliveredTs
	b.cruiseCycles, b.probeBW = cruiseCycles(), 0
	b.drainMin = r.minRTT
}

func (s *Stream) bbrCheckDrain() {
	if s.bbr.state == bbrStartup && s.bbr.fullBWReached {
		s.bbr.state = bbrDrain
		s.ssthresh = s.bbrBDP(s.bbrBW(), 1)
		// STARTUP's samples run over the path's rate: on the lab's
		// transatlantic link (12.1 MB/s, what PROBE_BW's rounds carry)
		// the max filter left STARTUP at 12.4-13.4 MB/s in every one of
		// seven traced runs. Held for the filter's 34 rounds (PROBE_BW's
		// rare probes need that window), such an estimate paced a
		// standing queue of 20-50 ms, just under what
		// bbrCheckOverpacing calls standing, through the whole first
		// 6 s download: the downloads' second halves' queue p95 was 33
		// ms in two runs of ten. So STARTUP's samples leave the filter
		// after v1's 10 rounds, by when PROBE_BW's own have replaced
		// them: 11-17 ms in five runs.
		s.bbr.bw.expireIn(bbrBWFilterRounds, s.bbr.rttCount, bbrStartupBWRounds)
	}
	if s.bbr.state == bbrDrain && uint32(s.inflight.n) <= s.bbrBDP(s.bbrBW(), 1) {
		s.bbrResetProbeBW()
	}
}

func (s *Stream) bbrCheckProbeRTTDone(now int64) {
	if s.bbr.probeRTTDone == 0 || now <= s.bbr.probeRTTDone {
		return
	}
	s.bbr.minRTTStamp = now
	s.bbr.sinceStampMin = -1
	s.cwnd = max(s.cwnd, s.bbr.priorCwnd)
	s.bbrResetMode()
}

func (s *Stream) bbrUpdateMinRTT(rs *rateSample, now int64) {
	b := &s.bbr
	expired := now > b.minRTTStamp+bbrMinRTTInterval
	if rs.rtt >= 0 && (b.sinceStampMin < 0 || rs.rtt < b.sinceStampMin) {
		b.sinceStampMin = rs.rtt
	}
	// The flow's own drains showed the path's RTT again within the
	// interval: PROBE_RTT would find what they found, at the price of an
	// idle round trip and 200 ms at 4 packets (5 % of a 6 s transatlantic
	// download). The min RTT starts again from this sample, as it does
	// on the way into PROBE_RTT.
	similar := expired && rs.rtt >= 0 && b.state == bbrProbeBW &&
		b.sinceStampMin <= b.minRTT+b.minRTT/bbrSimilarRTTDiv
	if rs.rtt >= 0 && (b.minRTT < 0 || rs.rtt < b.minRTT || expired) {
		b.minRTT = max(rs.rtt, 1)
		b.minRTTStamp = now
		b.sinceStampMin = -1
	}
	if expired && !similar && !b.idleRestart && b.state != bbrProbeRTT {
		b.state = bbrProbeRTT
		s.bbrSaveCwnd()
		b.probeRTTDone = 0
	}
	if b.state == bbrProbeRTT {
		s.appLimited = s.delivered + uint32(s.inflight.n)
		if s.appLimited == 0 {
			s.appLimited = 1
		}
		if b.probeRTTDone == 0 && s.inflight.n <= bbrCwndMinTarget {
			b.probeRTTDone = now + bbrProbeRTTMode
			b.probeRTTRound = false
			b.nextRTTDelivered = s.delivered
		} else if b.probeRTTDone != 0 {
			if b.roundStart {
				b.probeRTTRound = true
			}
			if b.probeRTTRound {
				s.bbrCheckProbeRTTDone(now)
			}
		}
	}
	if rs.delivered > 0 {
		b.idleRestart = false
	}
}

func (s *Stream) bbrUpdateGains() {
	b := &s.bbr
	switch b.state {
	case bbrStartup:
		b.pacingGain, b.cwndGain = bbrHighGain, bbrHighGain
	case bbrDrain:
		b.pacingGain, b.cwndGain = bbrDrainGain, bbrHighGain
	case bbrProbeBW:
		b.pacingGain, b.cwndGain = bbrPacingGain[b.cycleIndex], bbrCwndGain
	default:
		b.pacingGain, b.cwndGain = 1, 1
	}
}

// bbrCapBinds tells whether a pacing cap holds the flow clearly under the
// max filter's bandwidth: by more than a twentieth, the noise of a
// round's rate. Only such a cap makes every gain cycle probe. A cap that
// the max filter decayed to (its samples age out; the cap stays) is not
// one: on transatlantic a cap set after STARTUP stood at 0.985 of the
// filter for whole downloads, and with it every cycle probed, putting a
// 25 ms peak in the link's queue every 0.9 s.
func (s *Stream) bbrCapBinds() bool {
	lo := s.bbr.bwLo
	return lo > 0 && clearlyUnder(lo, s.bbrBW())
}

// clearlyUnder tells whether rate a is under b by more than the noise of
// a round's rate: a twentieth (bbrOverpaceDiv).
func clearlyUnder(a, b float64) bool {
	return a*bbrOverpaceDiv < b*(bbrOverpaceDiv-1)
}

// bbrMain runs once per processed ACK that could have delivered something.
func (s *Stream) bbrMain(rs *rateSample, now int64) {
	s.bbrUpdateBW(rs)
	s.bbrUpdateAckAggregation(rs)
	if s.bbr.state == bbrProbeBW && s.bbrIsNextCyclePhase(rs) {
		s.bbrAdvanceCycle()
	}
	s.bbrCheckFullBW(rs)
	s.bbrTrackRound(rs)
	s.bbrCheckDrain()
	s.bbrUpdateMinRTT(rs, now)
	s.bbrUpdateGains()
	s.bbr.roundGainMin = min(s.bbr.roundGainMin, s.bbr.pacingGain)
	s.bbr.roundGainMax = max(s.bbr.roundGainMax, s.bbr.pacingGain)
	bw := s.bbrBW()
	s.bbrSetPacingRate(s.bbrPaceBW(), s.bbr.pacingGain)
	s.bbrSetCwnd(rs, rs.ackedSacked, bw, s.bbr.cwndGain)
	s.notsentMax.Store(notsentLimit(s.pacingRate, s.opts.SendBuffer))
}

// bbrOnRTO fakes a loss round so the full-bandwidth test restarts.
func (s *Stream) bbrOnRTO() {
	s.bbr.prevCA = caLoss
	s.bbr.fullBW = 0
	s.bbr.roundStart = true
}

// Rate sampling (udx_rate.c).

func rackSentAfter(t1 int64, seq1 uint32, t2 int64, seq2 uint32) bool {
	return t1 > t2 || (t1 == t2 && seqDiff(seq1, seq2) > 0)
}

func (s *Stream) ratePktSent(p *outPkt, now int64) {
	if s.seq == s.remoteAcked {
		s.firstSentTs = now
		s.deliveredTs = now
	}
	p.firstSentTs = s.firstSentTs
	p.deliveredTs = s.deliveredTs
	p.delivered = s.delivered
	p.appLimited = s.appLimited != 0
}

func (s *Stream) ratePktDelivered(p *outPkt, rs *rateSample) {
	if p.deliveredTs == 0 {
		return
	}
	if rs.priorDelivered == 0 || rackSentAfter(p.timeSent, p.seq, s.firstSentTs, rs.seq) {
		rs.priorDelivered = p.delivered
		rs.priorTime = p.deliveredTs
		rs.isAppLimited = p.appLimited
		rs.isRetrans = p.retransmitted
		rs.seq = p.seq
		s.firstSentTs = p.timeSent
		rs.interval = s.firstSentTs - p.firstSentTs
	}
}

func (s *Stream) rateGen(delivered, lost uint32, rs *rateSample, now int64) {
	if s.appLimited != 0 && seqDiff(s.delivered, s.appLimited) > 0 {
		s.appLimited = 0
	}
	if delivered > 0 {
		s.deliveredTs = now
	}
	rs.ackedSacked = delivered
	rs.losses = lost
	if rs.priorTime == 0 {
		rs.delivered = -1
		rs.interval = -1
		return
	}
	rs.delivered = int64(s.delivered - rs.priorDelivered)
	snd := max(rs.interval, 0)
	ack := max(now-rs.priorTime, 0)
	rs.interval = max(snd, ack)
	if rtMin := s.rttMinUs(); rs.interval < rtMin {
		rs.interval = -1
		return
	}
}

// rateCheckAppLimited marks the flow application-limited when a packet
// leaves with less than one more packet's worth written and the window
// not full, as libudx does on every transmit. A Write waiting for room
// under the notsent bound (notsentLimit) has more data, though: the bound
// only keeps it out of the queue, 2 ms of the pacing rate, and a pacer
// that empties the queue before the writer's goroutine is back (on a busy
// machine it often is not within the millisecond) found the writer late,
// not the application short of data. Marked, a tunnel's download carried
// app-limited samples through nearly every STARTUP round, which BBR's
// full-bandwidth test skips, so STARTUP ran on until the bottleneck's
// buffer overflowed (19-105 packets lost in a round on the lab's mobile
// link) and the first 6 s download there got 1.46-2.18 MB/s in eleven
// runs; unmarked, 1.92-2.16, with kernel BBR's at 2.12-2.24.
func (s *Stream) rateCheckAppLimited() {
	if s.wblocked.Load() {
		return
	}
	if s.wqLen() < s.maxPayload() && uint32(s.inflight.n) < s.cwnd && s.retrans.n == 0 {
		s.appLimited = s.delivered + uint32(s.inflight.n)
		if s.appLimited == 0 {
			s.appLimited = 1
		}
	}
}
