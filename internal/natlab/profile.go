package natlab

import (
	"fmt"
	"time"
)

// Profile is a named kind of WAN link, shared by the lab's tests and the
// WAN benchmarks. RTT and Rate describe the link as a whole; Up and Down
// are what each direction does (Up: from the host or NAT to its router).
type Profile struct {
	Name string
	// RTT is the round-trip time the link adds, without queueing.
	RTT time.Duration
	// Rate is the bottleneck rate in bits per second, each way.
	Rate     int64
	Up, Down Impair
}

// symmetric builds a profile whose directions share delay (RTT/2), jitter,
// rate, a 100 ms queue and loss.
func symmetric(name string, rtt, jitter time.Duration, rate int64, loss float64) Profile {
	im := Impair{Delay: rtt / 2, Jitter: jitter, Rate: rate, Loss: loss}
	return Profile{Name: name, RTT: rtt, Rate: rate, Up: im, Down: im}
}

// The named profiles. Loss applies to each direction. Queues hold 100 ms
// at the link's rate.
//
// The forwarder is one process's user-space copy loop: on the 2-core
// development machine, shared with other builds, BenchmarkWANForwarder
// measured 494, 690 and 1080 Mbit/s (42k-94k packets/s) of one kernel TCP
// stream through an unlimited link, and in BenchmarkWAN, with tunnel
// processes beside it on the same two cores, kernel TCP through a
// 500 Mbit/s link reached 332-365 Mbit/s. A 1 Gbit/s LAN is beyond it,
// so LAN is scaled down to 300 Mbit/s; the others are as issue #12 gives
// them.
var (
	// LAN: 1 ms RTT, 300 Mbit/s (scaled down from 1 Gbit/s, see above),
	// no loss.
	LAN = symmetric("lan", time.Millisecond, 0, 300e6, 0)
	// Fiber: 20 ms RTT, 200 Mbit/s, 0.01 % loss.
	Fiber = symmetric("fiber", 20*time.Millisecond, 0, 200e6, 0.0001)
	// Transatlantic: 100 ms RTT, 100 Mbit/s, 0.1 % loss.
	Transatlantic = symmetric("transatlantic", 100*time.Millisecond, 0, 100e6, 0.001)
	// Mobile: 80 ms RTT ± 20 ms (±10 ms each way), 20 Mbit/s, 1 % loss,
	// 0.5 % of packets reordered (held back 5 ms).
	Mobile = func() Profile {
		p := symmetric("mobile", 80*time.Millisecond, 10*time.Millisecond, 20e6, 0.01)
		p.Up.Reorder, p.Down.Reorder = 0.005, 0.005
		return p
	}()
	// WifiBad: 40 ms RTT, 50 Mbit/s, 3 % loss in bursts of 4 packets on
	// average (Gilbert–Elliott).
	WifiBad = func() Profile {
		p := symmetric("wifi-bad", 40*time.Millisecond, 0, 50e6, 0)
		p.Up.Burst, p.Down.Burst = Bursty(0.03, 4), Bursty(0.03, 4)
		return p
	}()
)

// Profiles lists the named profiles in order of RTT-rate difficulty.
var Profiles = []Profile{LAN, Fiber, Transatlantic, Mobile, WifiBad}

// ProfileByName returns the named profile.
func ProfileByName(name string) (Profile, error) {
	for _, p := range Profiles {
		if p.Name == name {
			return p, nil
		}
	}
	return Profile{}, fmt.Errorf("natlab: no WAN profile %q", name)
}

// String describes the profile in one line.
func (p Profile) String() string {
	return fmt.Sprintf("%s (%v RTT, %.0f Mbit/s)", p.Name, p.RTT, float64(p.Rate)/1e6)
}
