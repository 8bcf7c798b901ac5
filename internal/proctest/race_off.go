//go:build !race

package proctest

// RaceEnabled: this test binary runs without the race detector.
const RaceEnabled = false
