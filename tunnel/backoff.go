package tunnel

import (
	"math/rand/v2"
	"time"
)

// backoff returns the wait before the dial that follows failures failed
// attempts: base doubling per failure up to max, with "equal jitter" (a
// random point in the upper half). Jitter keeps many forwarders that lost
// the same peer from redialing in lockstep; keeping the lower half out
// means that, below the cap, each wait is at least the previous one.
func backoff(failures int, base, max time.Duration) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := base
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(d-half+1)
}
