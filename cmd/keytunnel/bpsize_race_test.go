//go:build race

package main

// The race detector slows the tunnel ~10x: -race pushes 64 MiB to a reader
// paced at 8 MB/s; .ci/run runs the full size without -race.
const (
	bpSize = 64 << 20
	bpRate = 8e6
)
