package bench

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// UDP through keytunnel (expose --udp, forward --udp: datagrams on the
// secret stream's unreliable channel) and through holesail 2.4.1's UDP
// mode (each datagram framed on a reliable hyperdht stream), with raw
// loopback UDP as the floor, in one run:
//
//	go test -run XXX -bench UDP -benchtime 1x ./bench/
//
// Latency: one datagram at a time to an echo service and back (rtt-p50-us,
// rtt-p99-us), and the one-way overhead over raw UDP, half the difference
// of round trips (oneway-p50-us, oneway-p99-us; the target is p50 <= 300
// µs). Throughput: 1200-byte datagrams offered at 100k/s for 2 s to a
// counting sink (dgram/s delivered, loss-%; the target is >= 100k/s with
// <= 1 % loss), and as fast as one sender can (max-dgram/s, max-loss-%).
// The floor path is two bare relay processes (udpfloor_test.go): what
// any two-process UDP tunnel costs on this machine. The machine's cores
// are shared by the sender, the sink and the tunnel's two processes, so
// the tunnel's CPU time per datagram bounds the rate: cpu-us/dgram-server
// and -client are the processes' CPU time (user and system) during the
// offered-rate run per datagram that reached the sink.

// A udpPath leads to a UDP service: it returns the address to send to,
// and the processes that carry the datagrams, the server's side (next to
// svc) first.
type udpPath struct {
	name string
	via  func(tb testing.TB, svc string) (string, []int)
}

var udpPaths = []udpPath{
	{"udp", func(_ testing.TB, svc string) (string, []int) { return svc, nil }},
	{"floor", viaUDPFloor},
	{"keytunnel", viaKeytunnelUDP},
	{"holesail", viaHolesailUDP},
}

func viaKeytunnelUDP(tb testing.TB, svc string) (string, []int) {
	bs := proctest.Testnet(tb, 4)
	_, port, _ := net.SplitHostPort(svc)
	exp, pub := proctest.Expose(tb, bs, port, "--udp")
	fwd, local := proctest.Forward(tb, bs, pub, "--udp")
	return local, []int{exp.Pid(), fwd.Pid()}
}

func viaHolesailUDP(tb testing.TB, svc string) (string, []int) {
	nodetest.Require(tb)
	bs := proctest.Testnet(tb, 4)
	_, port, _ := net.SplitHostPort(svc)
	var seed key.Seed
	rand.Read(seed[:])
	srv := nodetest.Start(tb, "holesail-udp.js", "server", bs, hex.EncodeToString(seed[:]), port)
	pub := srv.Expect("holesail-udp-server ", 60*time.Second)
	cli := nodetest.Start(tb, "holesail-udp.js", "client", bs, pub, "0")
	return cli.Expect("holesail-udp-client ", 60*time.Second), []int{srv.Pid(), cli.Pid()}
}

// udpService echoes datagrams that start with 'E' and counts the others.
type udpService struct {
	addr    string
	counted atomic.Int64
}

func newUDPService(tb testing.TB) *udpService {
	s := &udpService{}
	pc := proctest.ServeUDP(tb, func(p []byte, _ netip.AddrPort) []byte {
		if len(p) > 0 && p[0] == 'E' {
			return p
		}
		s.counted.Add(1)
		return nil
	})
	pc.SetReadBuffer(8 << 20)
	s.addr = pc.LocalAddr().String()
	return s
}

func udpConn(tb testing.TB, addr string) *net.UDPConn {
	c := proctest.DialUDP(tb, addr)
	c.SetWriteBuffer(8 << 20)
	return c
}

// pings sends n numbered echo requests one at a time and returns the round
// trips of those answered, sorted. A request lost on the way is retried
// after a second (and not timed).
func pings(tb testing.TB, c *net.UDPConn, n, size int) []time.Duration {
	req := make([]byte, max(size, 9))
	req[0] = 'E'
	buf := make([]byte, 65535)
	var rtts []time.Duration
	for i := range n {
		binary.BigEndian.PutUint64(req[1:], uint64(i))
		start := time.Now()
		for try := 0; ; try++ {
			if try == 5 {
				tb.Fatalf("ping %d: no answer in 5 tries", i)
			}
			c.Write(req)
			c.SetReadDeadline(time.Now().Add(time.Second))
			got := false
			for {
				m, err := c.Read(buf)
				if err != nil {
					break
				}
				if m >= 9 && binary.BigEndian.Uint64(buf[1:]) == uint64(i) {
					got = true
					break
				}
			}
			if got {
				if try == 0 {
					rtts = append(rtts, time.Since(start))
				}
				break
			}
		}
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	return rtts
}

// blast sends n datagrams of size bytes, rate a second (0: as fast as
// the socket takes them), and returns how many reached the sink and the
// sending time.
func blast(c *net.UDPConn, s *udpService, n, size, rate int) (int, time.Duration) {
	p := make([]byte, size)
	p[0] = 'D'
	before := s.counted.Load()
	start := time.Now()
	for i := range n {
		if rate > 0 && i%100 == 0 {
			// Bursts of 100 on schedule: a timer per datagram would
			// cost more than the datagram.
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
		}
		c.Write(p)
	}
	took := time.Since(start)
	last := int64(-1)
	for got := s.counted.Load(); got != last; got = s.counted.Load() {
		last = got
		time.Sleep(300 * time.Millisecond)
	}
	return int(last - before), took
}

func pct(ds []time.Duration, q float64) time.Duration {
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// BenchmarkUDP measures each path; see the top of this file.
func BenchmarkUDP(b *testing.B) {
	const (
		pingCount = 5000
		size      = 1200
		offered   = 100_000
		seconds   = 2
	)
	var floor []time.Duration
	for _, p := range udpPaths {
		b.Run(p.name, func(b *testing.B) {
			svc := newUDPService(b)
			addr, pids := p.via(b, svc.addr)
			c := udpConn(b, addr)
			// Warm up: the flow opens, and 1200-byte datagrams, framed
			// on the stream until the path MTU is probed up, go as
			// datagrams from then on.
			pings(b, c, 200, size)
			blast(c, svc, 2000, size, 20_000)
			b.ResetTimer()
			for range b.N {
				rtts := pings(b, c, pingCount, 32)
				us := func(d time.Duration) float64 { return float64(d) / 1e3 }
				b.ReportMetric(us(pct(rtts, 0.5)), "rtt-p50-us")
				b.ReportMetric(us(pct(rtts, 0.99)), "rtt-p99-us")
				if p.name == "udp" {
					floor = rtts
				} else if floor != nil {
					b.ReportMetric(us(pct(rtts, 0.5)-pct(floor, 0.5))/2, "oneway-p50-us")
					b.ReportMetric(us(pct(rtts, 0.99)-pct(floor, 0.99))/2, "oneway-p99-us")
				}
				n := offered * seconds
				cpu0 := make([]time.Duration, len(pids))
				for i, pid := range pids {
					cpu0[i] = procCPU(b, pid)
				}
				got, took := blast(c, svc, n, size, offered)
				b.ReportMetric(float64(got)/took.Seconds(), "dgram/s")
				b.ReportMetric(100*float64(n-got)/float64(n), "loss-%")
				for i, side := range []string{"server", "client"}[:len(pids)] {
					b.ReportMetric(us(procCPU(b, pids[i])-cpu0[i])/float64(max(got, 1)), "cpu-us/dgram-"+side)
				}
				got, took = blast(c, svc, n, size, 0)
				b.ReportMetric(float64(got)/took.Seconds(), "max-dgram/s")
				b.ReportMetric(100*float64(n-got)/float64(n), "max-loss-%")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestUDPHarness runs BenchmarkUDP's measurements through every path at
// a small size, so that CI keeps them working; it times nothing.
func TestUDPHarness(t *testing.T) {
	for _, p := range udpPaths {
		t.Run(p.name, func(t *testing.T) {
			svc := newUDPService(t)
			addr, _ := p.via(t, svc.addr)
			c := udpConn(t, addr)
			rtts := pings(t, c, 50, 1200)
			got, _ := blast(c, svc, 2000, 1200, 20_000)
			t.Log(fmt.Sprintf("%s: rtt p50 %v; %d of 2000 datagrams at 20k/s", p.name, pct(rtts, 0.5), got))
			if got == 0 {
				t.Fatalf("%s: no datagram reached the sink", p.name)
			}
		})
	}
}
