package dhtrelay

import (
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// BenchmarkRelayedThroughput: one relayed connection, a Go client echoing
// 32 MiB through a Go UDP server, via the Go relay and via the Node relay
// (@hyperswarm/dht-relay) over TCP and WebSocket, in one run:
//
//	go test -run XXX -bench RelayedThroughput -benchtime 1x ./relay/dhtrelay/
func BenchmarkRelayedThroughput(b *testing.B) {
	nodetest.Require(b)
	tn := testnet(b, 3)
	relayNode, serverNode := peerNode(b, tn), peerNode(b, tn)
	skp := newKey(b)
	l, err := serverNode.Listen(b.Context(), skp, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	echoConns(l.Accept)
	const size = 32 << 20
	for _, impl := range []string{"go", "node"} {
		for _, tr := range []string{"tcp", "ws"} {
			b.Run(impl+"-"+tr, func(b *testing.B) {
				var url string
				if impl == "go" {
					_, url = goRelay(b, relayNode, tr, ServerOptions{})
				} else {
					p := nodetest.Start(b, "dhtrelay-node.js", "relay", tr, strings.Join(tn.Bootstrap, ","))
					url = tr + "://127.0.0.1:" + strings.TrimSpace(p.Expect("listening ", 60*time.Second))
				}
				c := dialClient(b, url, ClientOptions{})
				b.SetBytes(2 * size)
				b.ResetTimer()
				var total time.Duration
				for range b.N {
					conn, err := c.Dial(b.Context(), skp.Public, nil)
					if err != nil {
						b.Fatal(err)
					}
					total += roundTrip(b, conn, size)
					conn.Close()
				}
				b.ReportMetric(float64(2*size)*float64(b.N)/total.Seconds()/1e6, "MB/s-echo")
			})
		}
	}
}
