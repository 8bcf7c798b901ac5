//go:build !race

package main

// Backpressure test: 1 GiB to a reader paced at 40 MB/s (~27 s), each
// keytunnel process under 64 MB peak RSS.
const (
	bpSize   = 1 << 30
	bpRate   = 40e6
	bpMaxRSS = 64 << 20
)

// budgetMaxRSS bounds expose in the 300 x 4 MiB budget test.
const budgetMaxRSS = 64 << 20
