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
// median and the tail say more. Each dial is a freshly started `keytunnel
// forward` (its DHT node joined, no route cached) to one running `expose`:
// lookup, handshake, connect and a first echo through the tunnel, in units
// of the base RTT. A pause between forwards lets the lab DHT forget the
// last one.
//
//	dial-p50-rtt, dial-p90-rtt, dial-max-rtt   over -wan.dials dials
//	dial-over-1s                               dials that took over 1 s
//	join-failed                                forwards whose node could not
//	                                           join the DHT (started again)
func BenchmarkWANDial(b *testing.B) {
	for _, prof := range natlab.Profiles {
		b.Run(prof.Name, func(b *testing.B) {
			w := newWANLab(b, prof)
			bin := proctest.Binary(b)
			exp := proctest.StartCmd(b, w.srv.Command(bin, "--json", "expose", fmt.Sprintf("127.0.0.1:%d", w.svcPort)), proctest.Env(b, w.boot))
			pub, _ := proctest.JSON(b, exp.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string)
			var ds []time.Duration
			over := 0
			joinFailed := 0
			for len(ds) < *wanDials {
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
					continue
				}
				addr := fmt.Sprint(proctest.JSON(b, line)["listen"])
				c, d := w.firstEcho(b, addr)
				c.Close()
				fwd.Stop()
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
			b.ReportMetric(float64(joinFailed), "join-failed")
			b.ReportMetric(float64(w.rtt)/1e6, "base-rtt-ms")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: dials %v", prof.Name, ds)
		})
	}
}
