package bench

import (
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

var wanDials = flag.Int("wan.dials", 12, "WANDial benchmark: cold first dials per profile")

// BenchmarkWANDial measures the first dial of a key many times per
// profile, where BenchmarkWAN's dial-rtt is one sample: on the lossy
// profiles one lost packet on a dial's path (the lookup, the handshake,
// the stream's first packets) moves a single sample by seconds, so the
// median and the tail say more. Each dial is a freshly started client
// (its DHT node joined, no route cached) to one running server: lookup,
// handshake, connect and a first echo through the tunnel, in units of the
// base RTT, from when the client says it is ready, as BenchmarkWAN's
// dial-rtt. keytunnel's client is `keytunnel forward`, which says so once
// its node has joined the DHT; hypertele's (hyperdht under Node, the
// reference) listens at once and joins meanwhile, so its time includes
// the join. (Given 3 s to join first, half of hypertele's dials on most
// profiles failed after 10 s, the abort of hyperdht's passive connect,
// which a node waits in when it takes itself for unfirewalled: probably
// what its nodes conclude behind the lab's loopback relay to the
// bootstrap node.)
// A pause between clients lets the lab DHT forget the last one.
//
//	dial-p50-rtt, dial-p90-rtt, dial-max-rtt   over -wan.dials dials
//	dial-over-1s                               dials that took over 1 s
//	join-failed                                keytunnel forwards whose node
//	                                           could not join the DHT
//	                                           (started again)
func BenchmarkWANDial(b *testing.B) {
	for _, prof := range natlab.Profiles {
		b.Run(prof.Name, func(b *testing.B) {
			w := newWANLab(b, prof)
			b.Run("keytunnel", func(b *testing.B) {
				bin := proctest.Binary(b)
				exp := proctest.StartCmd(b, w.srv.Command(bin, "--json", "expose", fmt.Sprintf("127.0.0.1:%d", w.svcPort)), proctest.Env(b, w.boot))
				pub, _ := proctest.JSON(b, exp.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string)
				joinFailed := 0
				w.dialMany(b, func() (string, func(), bool) {
					fwd := proctest.StartCmd(b, w.cli.Command(bin, "--json", "forward", pub, "0"), proctest.Env(b, w.boot))
					line, ok := fwd.LineOrExit(`"event":"forwarding"`, 60*time.Second)
					if !ok {
						// Its node could not join the DHT: the lossy
						// profiles' bursts count packets, and a joining
						// node's are few and far between. Not a dial.
						joinFailed++
						if joinFailed > 3 {
							b.Fatalf("%d forwards could not join the DHT:\n%s", joinFailed, fwd.Err)
						}
						time.Sleep(2 * time.Second)
						return "", nil, false
					}
					return fmt.Sprint(proctest.JSON(b, line)["listen"]), fwd.Stop, true
				})
				b.ReportMetric(float64(joinFailed), "join-failed")
			})
			b.Run("hypertele", func(b *testing.B) {
				pub := w.hyperteleServer(b)
				w.dialMany(b, func() (string, func(), bool) {
					addr, cli := w.hyperteleClient(b, pub)
					return addr, cli.Stop, true
				})
			})
		})
	}
}

// dialMany times -wan.dials first connections, each through a client that
// start starts (false: none started, try again), and reports them.
func (w *wanLab) dialMany(b *testing.B, start func() (addr string, stop func(), ok bool)) {
	var ds []time.Duration
	over := 0
	for len(ds) < *wanDials {
		addr, stop, ok := start()
		if !ok {
			continue
		}
		c, d := w.firstEcho(b, addr)
		c.Close()
		stop()
		ds = append(ds, d)
		if d > time.Second {
			over++
		}
		time.Sleep(2 * time.Second)
	}
	slices.Sort(ds)
	in := func(d time.Duration) float64 { return float64(d) / float64(w.rtt) }
	b.ReportMetric(in(ds[len(ds)/2]), "dial-p50-rtt")
	b.ReportMetric(in(ds[len(ds)*9/10]), "dial-p90-rtt")
	b.ReportMetric(in(ds[len(ds)-1]), "dial-max-rtt")
	b.ReportMetric(float64(over), "dial-over-1s")
	b.ReportMetric(float64(w.rtt)/1e6, "base-rtt-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("dials %v", ds)
}
