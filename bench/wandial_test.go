package bench

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

var wanDials = flag.Int("wan.dials", 12, "WANDial benchmark: cold first dials per profile")

// BenchmarkWANDial measures the first dial of a key many times per
// profile, where BenchmarkWAN's dial-rtt is one sample: on the lossy
// profiles one lost packet on a dial's path (the lookup, the handshake,
// the stream's first packets) moves a single sample by seconds, so the
// median and the tail say more. Each dial is a freshly started client
// (its DHT node joined, no route cached) to one running server: lookup,
// handshake, connect and a first echo, in units of the base RTT, from
// when the client says it is ready.
//
//   - keytunnel: `keytunnel forward` to `keytunnel expose`, a TCP
//     connection through both to the lab's service. forward says it is
//     ready once its node has joined the DHT.
//   - hypertele: its client and server, as keytunnel's. Its client
//     listens at once and joins meanwhile, so its time includes the join.
//     (Given 3 s to join first, half of its dials on most profiles
//     failed after 10 s, the abort of hyperdht's passive connect, which a
//     node waits in when it takes itself for unfirewalled: probably what
//     its nodes conclude behind the lab's loopback relay to the bootstrap
//     node, which hypertele needs since it takes the bootstrap as a port
//     on 127.0.0.1.)
//   - hyperdht: the reference alone, Node to Node (interop/hyperdht-peer.js
//     ttfb against its echo server), timed from connect to the first
//     byte back once the client's node is fully bootstrapped, with no TCP
//     hop on either end: the target's "hyperdht's dial".
//
// A pause between clients lets the lab DHT forget the last one.
//
//	dial-p50-rtt, dial-p90-rtt, dial-max-rtt   over -wan.dials dials
//	dial-over-1s                               dials that took over 1 s
//	join-failed                                keytunnel forwards whose node
//	                                           could not join the DHT
//	                                           (started again)
//	dial-failed                                hyperdht dials that failed
//	                                           (not timed; tried again)
func BenchmarkWANDial(b *testing.B) {
	for _, prof := range natlab.Profiles {
		b.Run(prof.Name, func(b *testing.B) {
			w := newWANLab(b, prof)
			b.Run("keytunnel", func(b *testing.B) {
				bin := proctest.Binary(b)
				exp := proctest.StartCmd(b, w.srv.Command(bin, "--json", "expose", fmt.Sprintf("127.0.0.1:%d", w.svcPort)), proctest.Env(b, w.boot))
				pub, _ := proctest.JSON(b, exp.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string)
				joinFailed := 0
				w.dialMany(b, func() (time.Duration, bool) {
					fwd := proctest.StartCmd(b, w.cli.Command(bin, "--json", "forward", pub, "0"), proctest.Env(b, w.boot))
					defer fwd.Stop()
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
						return 0, false
					}
					return w.timeEcho(b, fmt.Sprint(proctest.JSON(b, line)["listen"])), true
				})
				b.ReportMetric(float64(joinFailed), "join-failed")
			})
			b.Run("hypertele", func(b *testing.B) {
				pub := w.hyperteleServer(b)
				w.dialMany(b, func() (time.Duration, bool) {
					addr, cli := w.hyperteleClient(b, pub)
					defer cli.Stop()
					return w.timeEcho(b, addr), true
				})
			})
			b.Run("hyperdht", func(b *testing.B) {
				// Node to Node with no TCP on either end, each dial from
				// a fresh node once it has joined (fullyBootstrapped):
				// the reference's own dial, as keytunnel's is timed.
				nodetest.Require(b)
				var seed key.Seed
				rand.Read(seed[:])
				srv := nodetest.StartIn(b, w.srv.ExecPrefix(), "hyperdht-peer.js", "server", w.boot, hex.EncodeToString(seed[:]))
				pub := srv.Expect("listening ", 60*time.Second)
				failed := 0
				w.dialMany(b, func() (time.Duration, bool) {
					cli := nodetest.StartIn(b, w.cli.ExecPrefix(), "hyperdht-peer.js", "ttfb", w.boot, pub, "1")
					defer cli.Stop()
					got := cli.ExpectAny(90*time.Second, "ttfb ", "error ")
					if ms, ok := strings.CutPrefix(got, "ttfb "); ok {
						f, err := strconv.ParseFloat(strings.Fields(ms)[0], 64)
						if err != nil {
							b.Fatalf("hyperdht-peer.js: %q", got)
						}
						return time.Duration(f * float64(time.Millisecond)), true
					}
					// hyperdht gave up on the dial (its connect's own
					// timeouts): counted, not timed.
					failed++
					b.Logf("hyperdht dial failed: %s", got)
					if failed > *wanDials {
						b.Fatalf("%d hyperdht dials failed", failed)
					}
					return 0, false
				})
				b.ReportMetric(float64(failed), "dial-failed")
			})
		})
	}
}

// dialMany runs dial, which starts a fresh client and times its first
// connection (false: none timed, try again), until -wan.dials are timed,
// and reports them.
func (w *wanLab) dialMany(b *testing.B, dial func() (time.Duration, bool)) {
	var ds []time.Duration
	over := 0
	for len(ds) < *wanDials {
		d, ok := dial()
		if !ok {
			continue
		}
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

// timeEcho times a first connection through addr to its first echoed byte.
func (w *wanLab) timeEcho(b *testing.B, addr string) time.Duration {
	c, d := w.firstEcho(b, addr)
	c.Close()
	return d
}
