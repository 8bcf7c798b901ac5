//go:build race

package udx

import "time"

// The race detector slows the loop ~10×; 256 MiB would not fit the time
// budget, so -race runs move 32 MiB through the same impairments.
const lossyDefault = 32 << 20

const interopDefault = 32 << 20

const interopLimit = 240 * time.Second

// raceOn: sync.Pool drops a quarter of what it is given under -race.
const raceOn = true
