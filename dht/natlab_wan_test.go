package dht

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// The NAT matrix over WAN profiles (issue #12): for each pair client ×
// server of {consistent, random} NATs, the time from Dial to the first
// echoed byte, for a Go client and Go server and for a Node hyperdht
// client and server on the same lab, in units of the base RTT between the
// two hosts.
//
// The lab: the DHT (a bootstrap node and six persistent nodes) and a blind
// relay sit on the lab internet, with no WAN link of their own. Each NAT's
// uplink is a WAN link carrying half the profile (half its delay, jitter
// and loss each way, its full rate), so host to host the path has the
// profile's RTT and about its loss, and each host is half the profile's
// RTT from the DHT nodes. That is how the first numbers were taken
// (each host 50 ms from the DHT nodes, 100 ms host to host).
//
// random×random cannot be punched: both implementations' clients ask for
// a blind relay on the lab internet (DialOptions.RelayThrough, hyperdht
// connect's relayThrough) and connect through it, each through its own
// implementation's relay (keytunnel's BlindRelay, Node's blind-relay
// server in hyperdht-relay.js).
//
// Every sample has fresh hosts behind the cell's two NATs, fresh Go nodes
// or fresh Node processes, and a fresh server key, so nothing is cached:
// no route, no relay address, no NAT sample.

// wanKinds are the NAT kinds of the matrix.
var wanKinds = []natlab.Kind{natlab.Consistent, natlab.Random}

// halfProfile is the WAN link on each NAT's uplink: half of p each way.
func halfProfile(p natlab.Profile) natlab.Profile {
	h := p
	h.Name = p.Name + "/2"
	h.RTT = p.RTT / 2
	for _, im := range []*natlab.Impair{&h.Up, &h.Down} {
		im.Delay /= 2
		im.Jitter /= 2
		im.Loss /= 2
		im.Reorder /= 2
	}
	return h
}

// wanCell is one pair's samples, in milliseconds; a failed sample is
// recorded in errs.
type wanCell struct {
	client, server natlab.Kind
	rtt            time.Duration // measured base RTT host to host
	want           netip.Addr    // where keytunnel's dials must end: the server's NAT or the relay
	goMS, nodeMS   []float64
	goPath         []string
	nodePath       []string
	errs           []string
}

func (c *wanCell) name() string { return fmt.Sprintf("%v×%v", c.client, c.server) }

// stats returns the median and max of ms in RTTs.
func (c *wanCell) stats(ms []float64) (med, max float64) {
	if len(ms) == 0 {
		return 0, 0
	}
	r := float64(c.rtt.Microseconds()) / 1000
	return median(ms) / r, slices.Max(ms) / r
}

// wanLab is the shared part of one profile's lab.
type wanLab struct {
	*labNet
	profile natlab.Profile
	relay   *BlindRelay
	relayAt netip.Addr
	// nodeRelay is the key of a Node blind relay (hyperdht-relay.js).
	nodeRelay string
	seq       int
}

func newWANLab(tb testing.TB, p natlab.Profile) *wanLab {
	ln := newLabNet(tb)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	rh, relay := ln.publicRelay(tb, ctx, 900)
	nrk := keyFor(901)
	nr := nodetest.StartIn(tb, ln.host(natlab.Public).ExecPrefix(), "hyperdht-relay.js", "relay", strings.Join(ln.boot, ","), fmt.Sprintf("%x", nrk.Seed()))
	if got := nr.Expect("relay ", 60*time.Second); got != nrk.Public.String() {
		tb.Fatalf("the Node relay serves %q", got)
	}
	return &wanLab{labNet: ln, profile: p, relay: relay, relayAt: rh.Addr(), nodeRelay: nrk.Public.String()}
}

// measureRTT is the host-to-host base RTT: each host's ICMP RTT to the
// bootstrap host (the lab internet adds nothing between them), the median
// of five each.
func (w *wanLab) measureRTT(tb testing.TB, a, b *natlab.Host) time.Duration {
	tb.Helper()
	boot := netip.MustParseAddrPort(w.boot[0]).Addr()
	var sum time.Duration
	for _, h := range []*natlab.Host{a, b} {
		rtts, err := h.Ping(boot, 5)
		if err != nil {
			tb.Fatal(err)
		}
		sum += rtts[len(rtts)/2]
	}
	return sum
}

// goSample dials a Go server from a Go client on fresh hosts behind cn
// and sn, and returns the time to the first echoed byte and the path.
func (w *wanLab) goSample(tb testing.TB, cn, sn *natlab.Net) (time.Duration, string, error) {
	w.seq++
	sh, ch := w.lab.Host(sn), w.lab.Host(cn)
	srv, cli := w.node(tb, sh, sn.Kind()), w.node(tb, ch, cn.Kind())
	defer srv.Close()
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	skp := keyFor(10000 + w.seq)
	l, err := srv.Listen(ctx, skp, nil)
	if err != nil {
		return 0, "", fmt.Errorf("listen: %w", err)
	}
	defer l.Close()
	echo(tb, l)
	opts := &DialOptions{}
	if cn.Kind() == natlab.Random && sn.Kind() == natlab.Random {
		opts.RelayThrough = RelayKeys(w.relay.PublicKey())
	}
	start := time.Now()
	if os.Getenv("DHT_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "natwan: dial %v×%v at %s\n", cn.Kind(), sn.Kind(), start.Format("15:04:05.000"))
	}
	c, err := cli.Dial(ctx, skp.Public, opts)
	if err != nil {
		return 0, "", fmt.Errorf("dial after %v: %w", time.Since(start).Round(time.Millisecond), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		return 0, "", err
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return 0, "", err
	}
	return time.Since(start), c.RemoteAddr().String(), nil
}

// nodeSample does the same with a Node hyperdht server and client
// (hyperdht-peer.js server and ttfb, each a fresh process).
func (w *wanLab) nodeSample(tb testing.TB, cn, sn *natlab.Net) (time.Duration, string, error) {
	w.seq++
	sh, ch := w.lab.Host(sn), w.lab.Host(cn)
	boot := strings.Join(w.boot, ",")
	skp := keyFor(10000 + w.seq)
	ns := nodetest.StartIn(tb, sh.ExecPrefix(), "hyperdht-peer.js", "server", boot, fmt.Sprintf("%x", skp.Seed()))
	defer ns.Kill()
	if got := ns.Expect("listening ", 60*time.Second); got != skp.Public.String() {
		return 0, "", fmt.Errorf("node server listens on %q", got)
	}
	args := []string{"ttfb", boot, skp.Public.String(), "1"}
	if cn.Kind() == natlab.Random && sn.Kind() == natlab.Random {
		args = append(args, w.nodeRelay)
	}
	nc := nodetest.StartIn(tb, ch.ExecPrefix(), "hyperdht-peer.js", args...)
	defer nc.Kill()
	line := nc.Expect("", 90*time.Second)
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ttfb" {
		return 0, "", fmt.Errorf("node client: %q", line)
	}
	ms, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return 0, "", fmt.Errorf("node client: %q", line)
	}
	return time.Duration(ms * float64(time.Millisecond)), f[2], nil
}

// runWANMatrix measures every cell of the matrix on profile p, samples
// times for each implementation (alternating, so a slow moment of the
// machine hits both alike).
func runWANMatrix(tb testing.TB, p natlab.Profile, samples func(client, server natlab.Kind) int) []*wanCell {
	w := newWANLab(tb, p)
	link := natlab.WAN(halfProfile(p))
	var cells []*wanCell
	for _, ck := range wanKinds {
		for _, sk := range wanKinds {
			c := &wanCell{client: ck, server: sk}
			if f := os.Getenv("NATWAN_CELLS"); f != "" && !slices.Contains(strings.Split(f, ","), fmt.Sprintf("%vx%v", ck, sk)) {
				continue
			}
			impl := os.Getenv("NATWAN_IMPL") // go, node or both
			cn, sn := w.lab.NAT(ck, link), w.lab.NAT(sk, link)
			c.rtt = w.measureRTT(tb, w.lab.Host(cn), w.lab.Host(sn))
			c.want = sn.Addr()
			if ck == natlab.Random && sk == natlab.Random {
				c.want = w.relayAt
			}
			for i := range samples(ck, sk) {
				if impl != "node" {
					d, path, err := w.goSample(tb, cn, sn)
					if err != nil {
						c.errs = append(c.errs, fmt.Sprintf("go sample %d: %v", i, err))
					} else {
						c.goMS = append(c.goMS, float64(d.Microseconds())/1000)
						c.goPath = append(c.goPath, path)
					}
				}
				if impl == "go" {
					continue
				}
				d, path, err := w.nodeSample(tb, cn, sn)
				if err != nil {
					c.errs = append(c.errs, fmt.Sprintf("node sample %d: %v", i, err))
				} else {
					c.nodeMS = append(c.nodeMS, float64(d.Microseconds())/1000)
					c.nodePath = append(c.nodePath, path)
				}
			}
			tb.Logf("%s %s: rtt %v, keytunnel ms %v (%v), hyperdht ms %v (%v) %v", p.Name, c.name(), c.rtt.Round(100*time.Microsecond), c.goMS, c.goPath, c.nodeMS, c.nodePath, c.errs)
			cells = append(cells, c)
		}
	}
	return cells
}

// wanTable formats cells as the report's table.
func wanTable(p natlab.Profile, cells []*wanCell) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, time to first echoed byte in RTTs (median / max):\n", p)
	fmt.Fprintf(&b, "  %-22s %-8s %-16s %-16s\n", "client × server", "RTT", "keytunnel", "hyperdht")
	for _, c := range cells {
		gm, gx := c.stats(c.goMS)
		nm, nx := c.stats(c.nodeMS)
		fmt.Fprintf(&b, "  %-22s %-8v %5.1f / %-8.1f %5.1f / %-8.1f %d/%d ok, %d/%d ok\n", c.name(), c.rtt.Round(time.Millisecond),
			gm, gx, nm, nx, len(c.goMS), len(c.goMS)+countPrefix(c.errs, "go"), len(c.nodeMS), len(c.nodeMS)+countPrefix(c.errs, "node"))
	}
	return b.String()
}

func countPrefix(s []string, prefix string) int {
	n := 0
	for _, e := range s {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

// BenchmarkNATMatrixWAN reports, for profiles transatlantic and mobile
// (NATWAN_PROFILES, comma-separated, overrides), every cell's median and
// max time to first byte in RTTs for keytunnel (go-) and hyperdht (node-),
// NATWAN_SAMPLES samples each (default 5).
//
//	flock /tmp/bench.lock go test -run XXX -bench NATMatrixWAN -benchtime 1x ./dht/
func BenchmarkNATMatrixWAN(b *testing.B) {
	natlab.Require(b)
	nodetest.Require(b)
	names := []string{"transatlantic", "mobile"}
	if s := os.Getenv("NATWAN_PROFILES"); s != "" {
		names = strings.Split(s, ",")
	}
	samples := 5
	if s := os.Getenv("NATWAN_SAMPLES"); s != "" {
		samples, _ = strconv.Atoi(s)
	}
	for _, name := range names {
		p, err := natlab.ProfileByName(name)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(p.Name, func(b *testing.B) {
			for range b.N {
				cells := runWANMatrix(b, p, func(natlab.Kind, natlab.Kind) int { return samples })
				for _, c := range cells {
					gm, gx := c.stats(c.goMS)
					nm, nx := c.stats(c.nodeMS)
					pre := strings.ReplaceAll(c.name(), "×", "x") + "-"
					b.ReportMetric(gm, pre+"go-med-rtt")
					b.ReportMetric(gx, pre+"go-max-rtt")
					b.ReportMetric(nm, pre+"node-med-rtt")
					b.ReportMetric(nx, pre+"node-max-rtt")
					for _, e := range c.errs {
						// keytunnel must connect; hyperdht's failures
						// (its punch aborts now and then) are its own.
						if strings.HasPrefix(e, "go") {
							b.Errorf("%s %s: %s", p.Name, c.name(), e)
						} else {
							b.Logf("%s %s: hyperdht: %s", p.Name, c.name(), e)
						}
					}
				}
				// Printed, not logged: a benchmark's log is cut at ten lines.
				fmt.Print(wanTable(p, cells))
			}
		})
	}
}

// TestNATMatrixWAN is BenchmarkNATMatrixWAN's lean form for CI: the
// transatlantic profile only, three samples a cell for each
// implementation, four in the two cells that punch a randomizing NAT.
// Every keytunnel dial connects, on the path its pair calls for (to the
// server's NAT; to the relay for random×random), and keytunnel is not slower
// than hyperdht beyond these margins, from measured variance:
//
//   - consistent×consistent and random×random, whose times hardly vary
//     (over 8 dials each: keytunnel 3.5-3.6 RTTs and 4.1 RTTs, hyperdht
//     3.7-4.0 and 5.5-14.5 RTTs with its own relay): the median
//     within 1.2 times hyperdht's plus one RTT, room for the race
//     detector and a loaded machine, well short of a retransmission
//     timeout (10 RTTs) or a second's wait, which are the regressions to
//     catch.
//   - the two random cells, whose punch waits a geometric time (mean 252
//     probes; one sample ranges from 0.1 to 10 s): the median of the
//     eight samples of both cells within twice hyperdht's plus one RTT.
//     Simulated with the measured paces (keytunnel's probes 4 times
//     hyperdht's rate, its time so far at best 3 times shorter), that
//     fails 0.02-0.7 % of runs when keytunnel is as fast as measured, and
//     9 % when it is no faster than hyperdht: it guards against
//     keytunnel falling behind, the benchmark measures by how much it
//     leads.
//
// hyperdht's failures (its birthday punch sometimes fails) are logged,
// not held against it; a cell without two hyperdht samples is compared
// with nothing.
func TestNATMatrixWAN(t *testing.T) {
	natlab.Require(t)
	nodetest.Require(t)
	random := func(c, s natlab.Kind) bool { return c != s }
	cells := runWANMatrix(t, natlab.Transatlantic, func(c, s natlab.Kind) int {
		if random(c, s) {
			return 4
		}
		return 3
	})
	t.Log(wanTable(natlab.Transatlantic, cells))
	var rgo, rnode []float64
	for _, c := range cells {
		for _, e := range c.errs {
			if strings.HasPrefix(e, "go") {
				t.Errorf("%s: %s", c.name(), e)
			} else {
				t.Logf("%s: hyperdht: %s", c.name(), e)
			}
		}
		for _, p := range c.goPath {
			if ap, err := netip.ParseAddrPort(p); err != nil || ap.Addr() != c.want {
				t.Errorf("%s: keytunnel connected to %s, want %v", c.name(), p, c.want)
			}
		}
		if random(c.client, c.server) {
			// Pooled in RTTs of each cell.
			r := float64(c.rtt.Microseconds()) / 1000
			for _, v := range c.goMS {
				rgo = append(rgo, v/r)
			}
			for _, v := range c.nodeMS {
				rnode = append(rnode, v/r)
			}
			continue
		}
		if len(c.nodeMS) < 2 || len(c.goMS) == 0 {
			t.Logf("%s: not compared (%d keytunnel, %d hyperdht samples)", c.name(), len(c.goMS), len(c.nodeMS))
			continue
		}
		gm, _ := c.stats(c.goMS)
		nm, _ := c.stats(c.nodeMS)
		if gm > 1.2*nm+1 {
			t.Errorf("%s: keytunnel's median %.1f RTTs, hyperdht's %.1f: beyond 1.2x + 1 RTT", c.name(), gm, nm)
		}
	}
	if len(rnode) < 4 || len(rgo) == 0 {
		t.Logf("random cells: not compared (%d keytunnel, %d hyperdht samples)", len(rgo), len(rnode))
		return
	}
	gm, nm := median(rgo), median(rnode)
	t.Logf("random cells pooled: keytunnel median %.1f RTTs over %d dials, hyperdht %.1f over %d", gm, len(rgo), nm, len(rnode))
	if gm > 2*nm+1 {
		t.Errorf("random cells: keytunnel's median %.1f RTTs, hyperdht's %.1f: beyond 2x + 1 RTT", gm, nm)
	}
}
