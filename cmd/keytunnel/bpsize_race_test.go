//go:build race

package main

// The race detector slows the tunnel ~10x: -race pushes 64 MiB to a reader
// paced at 8 MB/s; .ci/run runs the full size without -race. The binary
// is built with -race too (proctest.Binary), and the detector's shadow
// memory and per-goroutine state took the expose process's peak RSS from
// under 64 MB to 81 MB: the memory bound here only catches gross
// buffering; the full-size run holds each process to 64 MB.
const (
	bpSize   = 64 << 20
	bpRate   = 8e6
	bpMaxRSS = 160 << 20
)

// budgetMaxRSS bounds expose in the 300 x 4 MiB budget test: the race
// build peaked at 138 MB where the plain one stays under 64 MB (checked
// by .ci/run's run without -race); without budgets it was 874 MB.
const budgetMaxRSS = 256 << 20
