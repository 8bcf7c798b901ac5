// Package bench compares keytunnel with hypertele end to end, with raw
// loopback TCP as the ceiling: the throughput of one TCP stream through a
// tunnel, and the latency of a new TCP connection through an established
// tunnel. Every tunnel runs as real processes (the keytunnel binary,
// hypertele's Node scripts) on a loopback testnet:
//
//	go test -run XXX -bench . -benchtime 1x ./bench/
//
// TestHarness runs the same code at a small size, so that CI keeps it
// working.
//
// BenchmarkWAN (wan_test.go) measures the same paths, kernel TCP and raw
// udx over the NAT lab's emulated WAN links, one lab per named profile:
//
//	go test -run XXX -bench WAN -benchtime 1x ./bench/
//
// TestWANSmoke keeps its set-up working in CI.
package bench

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

func TestMain(m *testing.M) {
	if runFloor() || runUDPFloor() || runUDX() {
		return
	}
	proctest.Main(m)
}

// A path is a way to reach a TCP service: it returns the address that
// leads to svc, and the processes that carry it, the server's side (next
// to svc) first. latencyOnly paths cannot carry a bulk stream.
type path struct {
	name        string
	via         func(tb testing.TB, svc string) (string, []int)
	latencyOnly bool
}

var paths = []path{
	{"tcp", func(_ testing.TB, svc string) (string, []int) { return svc, nil }, false},
	{"floor", viaFloor, true},
	{"keytunnel", viaKeytunnel, false},
	{"hypertele", viaHypertele, false},
}

func viaKeytunnel(tb testing.TB, svc string) (string, []int) {
	bs := proctest.Testnet(tb, 4)
	exp, pub := proctest.Expose(tb, bs, svc)
	fwd, local := proctest.Forward(tb, bs, pub)
	return local, []int{exp.Pid(), fwd.Pid()}
}

func viaHypertele(tb testing.TB, svc string) (string, []int) {
	nodetest.Require(tb)
	bs := proctest.Testnet(tb, 4)
	_, port, _ := net.SplitHostPort(svc)
	var seed key.Seed
	rand.Read(seed[:])
	seed[0] = 0xab // a letter first: minimist keeps it a string
	boot := proctest.FirstPort(tb, bs)
	srv := nodetest.Start(tb, "node_modules/hypertele/server.js", "-l", port, "--seed", hex.EncodeToString(seed[:]), "--bootstrap", boot)
	srv.Expect("hypertele:", 60*time.Second)
	cli := nodetest.Start(tb, "node_modules/hypertele/client.js", "-p", "0", "-s", key.FromSeed(seed).Public.String(), "--bootstrap", boot)
	return cli.Expect("Server ready @", 60*time.Second), []int{srv.Pid(), cli.Pid()}
}

// sink serves the throughput protocol: the client sends an 8-byte size
// and that many bytes; the sink answers with the CRC-32C of the bytes
// (4 bytes, big-endian) when it has them all, so that the client checks
// they arrived intact, and then waits for the client to close. (The
// client closes first because hypertele drops what it still holds for a
// connection whose other side has closed.) CRC-32C runs at several GB/s
// here, far above any path's rate.
func sink(tb testing.TB) string {
	return proctest.Serve(tb, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(hdr[:]))
		h := crc32.New(castagnoli)
		if m, _ := io.CopyBuffer(h, io.LimitReader(c, n), make([]byte, 256<<10)); m != n {
			return
		}
		c.Write(h.Sum(nil))
		io.Copy(io.Discard, c)
	})
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stream sends size bytes over one new connection to addr and returns the
// time from the first byte to the sink's acknowledgement. The connection
// is open (one round trip done) before the clock starts.
func stream(tb testing.TB, addr string, size int64) time.Duration {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	rand.Read(buf)
	start := time.Now()
	errc := make(chan error, 1)
	var sum uint32
	go func() {
		// Each chunk starts with its number, so that a lost, repeated or
		// reordered chunk changes the sink's CRC.
		for i, left := uint64(0), size; left > 0; i++ {
			chunk := buf[:min(left, int64(len(buf)))]
			if len(chunk) >= 8 {
				binary.BigEndian.PutUint64(chunk, i)
			}
			sum = crc32.Update(sum, castagnoli, chunk)
			n, err := c.Write(chunk)
			left -= int64(n)
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		tb.Fatalf("%s: no acknowledgement: %v (sender: %v)", addr, err, <-errc)
	}
	d := time.Since(start)
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(ack[:]); got != sum {
		tb.Fatalf("%s: the sink's CRC-32C of %d bytes is %08x, the sender's %08x: the data changed on the way", addr, size, got, sum)
	}
	return d
}

// newConns opens n connections to addr one after another, each sending a
// byte and waiting for its echo, and returns their durations sorted.
func newConns(tb testing.TB, addr string, n int) []time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			tb.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		var b [1]byte
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != byte(i) {
			tb.Fatalf("%s: connection %d: echo %v, %v", addr, i, b, err)
		}
		ds[i] = time.Since(start)
		c.Close()
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds
}

func mean(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s / time.Duration(len(ds))
}

const (
	streamSize = 512 << 20
	connCount  = 200
)

// BenchmarkStream: one TCP stream of 512 MiB through each path (MB/s), and
// the CPU time (user and system) that each tunnel process spent per GiB
// carried: cpu-s/GiB-server on the side of the service, -client on the
// side of the connecting client.
func BenchmarkStream(b *testing.B) {
	for _, p := range paths {
		if p.latencyOnly {
			continue
		}
		b.Run(p.name, func(b *testing.B) {
			addr, pids := p.via(b, sink(b))
			stream(b, addr, 1) // the tunnel is up
			b.SetBytes(streamSize)
			cpu0 := make([]time.Duration, len(pids))
			for i, pid := range pids {
				cpu0[i] = procCPU(b, pid)
			}
			b.ResetTimer()
			var total time.Duration
			for range b.N {
				total += stream(b, addr, streamSize)
			}
			b.StopTimer()
			gib := float64(streamSize) * float64(b.N) / (1 << 30)
			b.ReportMetric(float64(streamSize)*float64(b.N)/total.Seconds()/1e6, "MB/s")
			for i, side := range []string{"server", "client"}[:len(pids)] {
				b.ReportMetric((procCPU(b, pids[i])-cpu0[i]).Seconds()/gib, "cpu-s/GiB-"+side)
			}
		})
	}
}

// procCPU is the user and system time that process pid has used so far
// (/proc/pid/stat, in clock ticks of 10 ms: USER_HZ is 100 on Linux).
func procCPU(tb testing.TB, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command name, which is in parentheses and
	// may hold anything: state is the first, utime the 12th, stime 13th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		tb.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		tb.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/stat: %q", pid, b)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// BenchmarkNewConn: 200 new TCP connections, one after another, through
// each established path; each is timed from dial to its first echoed byte
// (ms/conn: the mean; p50-ms and max-ms). The hypertele path also reports
// x-keytunnel, how many times keytunnel's mean fits in its own (the ratio
// issue #6 asks to be 10 or more), and x-floor, the same for the floor
// relays: the most any tunnel of two processes could reach on this
// machine. keytunnel reports x-floor too: its own mean over the floor's.
func BenchmarkNewConn(b *testing.B) {
	means := map[string]time.Duration{}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			addr, _ := p.via(b, proctest.Echo(b))
			newConns(b, addr, 1) // establish the tunnel
			b.ResetTimer()
			var all []time.Duration
			for range b.N {
				all = append(all, newConns(b, addr, connCount)...)
			}
			b.StopTimer()
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			means[p.name] = mean(all)
			b.ReportMetric(ms(mean(all)), "ms/conn")
			b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
			b.ReportMetric(ms(all[len(all)-1]), "max-ms")
			ratio := func(of string) float64 { return float64(mean(all)) / float64(means[of]) }
			switch {
			case p.name == "hypertele" && means["keytunnel"] > 0:
				b.ReportMetric(ratio("keytunnel"), "x-keytunnel")
				fallthrough
			case p.name == "keytunnel" && means["floor"] > 0:
				b.ReportMetric(ratio("floor"), "x-floor")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestHarness runs both measurements through every path at a small size.
func TestHarness(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			if !p.latencyOnly {
				addr, _ := p.via(t, sink(t))
				d := stream(t, addr, 4<<20)
				t.Logf("%s: 4 MiB in %v", p.name, d.Round(time.Microsecond))
			}
			addr, _ := p.via(t, proctest.Echo(t))
			ds := newConns(t, addr, 5)
			t.Logf("%s: new connection mean %v", p.name, mean(ds).Round(time.Microsecond))
		})
	}
}
