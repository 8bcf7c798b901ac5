//go:build race

package proctest

// RaceEnabled: this test binary runs under the race detector, so the
// keytunnel binary it starts is built with -race too.
const RaceEnabled = true
