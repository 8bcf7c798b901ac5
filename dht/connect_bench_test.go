package dht

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// BenchmarkDialFirstByte times Dial to first byte on one loopback testnet
// (5 Go nodes): a client dials an echo server, writes one byte and waits
// for it to come back; 20 dials one after the other, median reported. Go
// client → Go server against Node client → Node server (hyperdht-peer.js
// ttfb), and the two mixed pairs for reference.
//
//	go test -run '^$' -bench DialFirstByte -benchtime 1x ./dht/
func BenchmarkDialFirstByte(b *testing.B) {
	nodetest.Require(b)
	tn := testnet(b, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	boot := strings.Join(tn.Bootstrap, ",")

	goKey, nodeKey := seedKey(0x51), seedKey(0x52)
	srv := peerNode(b, tn, seedKey(0x53))
	l, err := srv.Listen(ctx, goKey, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	echo(b, l)
	ns := nodetest.Start(b, "hyperdht-peer.js", "server", boot, fmt.Sprintf("%x", nodeKey.Seed()))
	if got := ns.Expect("listening ", 60*time.Second); got != nodeKey.Public.String() {
		b.Fatalf("node listens on %s", got)
	}
	go func() { // drain the Node server's per-connection lines
		for {
			if _, err := ns.Line(context.Background()); err != nil {
				return
			}
		}
	}()
	cli := peerNode(b, tn, seedKey(0x54))

	const count = 20
	goDials := func(remote key.PublicKey) float64 {
		var ms []float64
		for range count {
			start := time.Now()
			c, err := cli.Dial(ctx, remote, nil)
			if err != nil {
				b.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte{1}); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				b.Fatal(err)
			}
			ms = append(ms, float64(time.Since(start).Microseconds())/1000)
			c.Close()
		}
		return median(ms)
	}
	nodeDials := func(remote key.PublicKey) float64 {
		p := nodetest.Start(b, "hyperdht-peer.js", "ttfb", boot, remote.String(), strconv.Itoa(count))
		defer p.Kill()
		var ms []float64
		for range count {
			line := p.Expect("", 2*time.Minute)
			f := strings.Fields(line)
			if len(f) != 3 || f[0] != "ttfb" {
				b.Fatalf("Node client: %q", line)
			}
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				b.Fatal(err)
			}
			ms = append(ms, v)
		}
		return median(ms)
	}
	for range b.N {
		goGo := goDials(goKey.Public)
		nodeNode := nodeDials(nodeKey.Public)
		goNode := goDials(nodeKey.Public)
		nodeGo := nodeDials(goKey.Public)
		b.ReportMetric(goGo, "go-ms/first-byte")
		b.ReportMetric(nodeNode, "node-ms/first-byte")
		b.ReportMetric(goGo/nodeNode, "go/node")
		b.ReportMetric(goNode, "go→node-ms")
		b.ReportMetric(nodeGo, "node→go-ms")
		b.Logf("Dial to first byte, median of %d: Go→Go %.2f ms, Node→Node %.2f ms (go/node %.2f); Go→Node %.2f ms, Node→Go %.2f ms",
			count, goGo, nodeNode, goGo/nodeNode, goNode, nodeGo)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
