package dht

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// BenchmarkLookupVsNode times a LOOKUP on one 30-node loopback testnet
// (hyperdht's testnet.js) from a Go node and from a Node node that are both
// members of it, 20 sequential lookups each, and reports go/node.
//
//	go test -run '^$' -bench LookupVsNode -benchtime 1x ./dht/
func BenchmarkLookupVsNode(b *testing.B) {
	nodetest.Require(b)
	p := nodetest.Start(b, "hyperdht-node.js", "testnet", "29")
	boot := p.Expect("bootstrap ", 60*time.Second)
	p.Expect("ready ", 120*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn, err := Testnet(ctx, 1, &TestnetOptions{Bootstrap: []string{boot}})
	if err != nil {
		b.Fatal(err)
	}
	defer tn.Close()
	g := tn.Nodes[0]
	kp := seedKey(0x33)
	topic := Hash([]byte("bench topic"))
	if err := g.Announce(ctx, topic, kp, nil, nil); err != nil {
		b.Fatal(err)
	}
	const count = 20
	for range b.N {
		start := time.Now()
		for range count {
			s := g.Lookup(ctx, topic)
			for range s.All(ctx) {
			}
			if err := s.Err(); err != nil {
				b.Fatal(err)
			}
		}
		goMS := float64(time.Since(start).Microseconds()) / 1000 / count
		fmt.Fprintf(p.Stdin(), "bench %s %d\n", hx(topic[:]), count)
		nodeMS, err := strconv.ParseFloat(p.Expect("bench ", 2*time.Minute), 64)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(goMS, "go-ms/lookup")
		b.ReportMetric(nodeMS, "node-ms/lookup")
		b.ReportMetric(goMS/nodeMS, "go/node")
	}
}
