package udx

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
	"golang.org/x/net/ipv4"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const benchSize = 256 << 20

// BenchmarkThroughput compares, in one run, a single Go→Go stream, a single
// Node→Node udx-native stream, and raw UDP on loopback (the ceiling of
// datagrams one by one). cpu-s/GiB is the CPU time (user and system) of
// both ends together per GiB carried: go-go's and raw-udp's from this
// process's rusage, node-node's from the Node process's; raw-udp-gso is
// the ceiling with UDP segmentation and receive offload. Run:
//
//	go test -run XXX -bench Throughput -benchtime 1x ./udx/
func BenchmarkThroughput(b *testing.B) {
	b.Run("go-go", func(b *testing.B) {
		for range b.N {
			sa, sb := udpSocket(b), udpSocket(b)
			x, y := pair(b, sa, sb, 1, 2)
			buf := make([]byte, 64<<10)
			c0, t0 := cpuTime(), time.Now()
			go func() {
				for left := benchSize; left > 0; left -= len(buf) {
					x.Write(buf)
				}
				x.CloseWrite()
			}()
			n, err := io.CopyBuffer(io.Discard, y, make([]byte, 64<<10))
			if err != nil || n != benchSize {
				b.Fatalf("%d %v", n, err)
			}
			reportRate(b, n, time.Since(t0), cpuTime()-c0)
			b.SetBytes(0)
		}
	})
	b.Run("node-node", func(b *testing.B) {
		for range b.N {
			p := nodetest.Start(b, "udx-bench.js", "--size", fmt.Sprint(benchSize))
			f := strings.Fields(p.Expect("bench ", 120*time.Second))
			n, _ := strconv.ParseFloat(f[0], 64)
			secs, _ := strconv.ParseFloat(f[1], 64)
			cpu, _ := strconv.ParseFloat(f[2], 64)
			b.ReportMetric(n/secs/1e6, "MB/s")
			b.ReportMetric(cpu/(n/(1<<30)), "cpu-s/GiB")
		}
	})
	b.Run("raw-udp", func(b *testing.B) {
		rawUDP(b, func(rx, tx *net.UDPConn) (func(), func() (int, error)) {
			pw, pr := ipv4.NewPacketConn(tx), ipv4.NewPacketConn(rx)
			ws, rs := make([]ipv4.Message, 64), make([]ipv4.Message, 64)
			for i := range ws {
				ws[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 1472)}, Addr: rx.LocalAddr()}
				rs[i].Buffers = [][]byte{make([]byte, 2048)}
			}
			send := func() { pw.WriteBatch(ws, 0) }
			recv := func() (int, error) {
				k, err := pr.ReadBatch(rs, 0)
				n := 0
				for _, m := range rs[:max(k, 0)] {
					n += m.N
				}
				return n, err
			}
			return send, recv
		})
	})
	// raw-udp-gso: the same with 44 datagrams per segmented send and GRO
	// on the receiver, as udx does where the kernel has both.
	b.Run("raw-udp-gso", func(b *testing.B) {
		rawUDP(b, func(rx, tx *net.UDPConn) (func(), func() (int, error)) {
			g, ok := newBatchIO(rx, false, false, true).(groReader)
			wr := newBatchIO(tx, false, true, false)
			if !ok || !g.groOn() || wr == nil {
				b.Skip("no UDP GRO here")
			}
			ws := make([]txMsg, 64*maxGSOBytes/1472)
			for i := range ws {
				ws[i] = txMsg{b: make([]byte, 1472), addr: rx.LocalAddr().(*net.UDPAddr).AddrPort()}
			}
			bufs := make([]*[groBufSize]byte, groBufs)
			for i := range bufs {
				bufs[i] = new([groBufSize]byte)
			}
			rs := make([]rxMsg, groBufs*groSegs)
			send := func() { wr.write(ws) }
			recv := func() (int, error) {
				k, err := g.readGRO(bufs, rs)
				n := 0
				for _, m := range rs[:k] {
					n += m.n
				}
				return n, err
			}
			return send, recv
		})
	})
}

// rawUDP measures a loopback UDP socket pair for 2 s, one goroutine
// sending batches as fast as it can, the benchmark's reading them.
func rawUDP(b *testing.B, setup func(rx, tx *net.UDPConn) (send func(), recv func() (int, error))) {
	for range b.N {
		rx, tx := mustUDP(b), mustUDP(b)
		defer rx.Close()
		defer tx.Close()
		rx.SetReadBuffer(4 << 20)
		send, recv := setup(rx, tx)
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				send()
			}
		}()
		var n int64
		c0, t0 := cpuTime(), time.Now()
		for time.Since(t0) < 2*time.Second {
			k, err := recv()
			if err != nil {
				b.Fatal(err)
			}
			n += int64(k)
		}
		reportRate(b, n, time.Since(t0), cpuTime()-c0)
		close(stop)
		<-done
	}
}

// reportRate reports n bytes in el as MB/s, and cpu as CPU s per GiB.
func reportRate(b *testing.B, n int64, el, cpu time.Duration) {
	b.ReportMetric(float64(n)/el.Seconds()/1e6, "MB/s")
	b.ReportMetric(cpu.Seconds()/(float64(n)/(1<<30)), "cpu-s/GiB")
}
