package bench

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// roamLimit is how long BenchmarkRoaming waits for a tunnel to recover.
const roamLimit = 20 * time.Second

// BenchmarkRoaming measures what a NAT rebinding does to an established
// tunnel, keytunnel's and hypertele's (the Node reference) each in a lab
// of its own: the service and the tunnel's server on a public host, the
// tunnel's client behind a randomizing NAT. One connection echoes an
// 8-byte probe every 20 ms; the NAT's conntrack table is flushed, so the
// client's next packet leaves from a new port and the server's packets
// to the old one are dropped.
//
//	go test -run XXX -bench Roaming -benchtime 1x ./bench/
//
//	recover-ms  from the flush until the echo of a probe written after
//	            it arrives; roamLimit (20 s) when none did
//	recovered   1 when one did within roamLimit, else 0
//	conn-alive  1 when the connection was still open (not reset or
//	            ended) at the end, else 0
//
// keytunnel's server stream moves to the client's new port once
// secret-stream has authenticated data that came from there
// (udx.FirewallRoam); libudx keeps sending to the old one, so
// hypertele's connection stalls until its stream gives up.
func BenchmarkRoaming(b *testing.B) {
	for _, name := range []string{"keytunnel", "hypertele"} {
		b.Run(name, func(b *testing.B) {
			lab := natlab.New(b)
			w := &wanLab{prof: natlab.LAN, lab: lab, boot: proctest.LabDHT(b, lab)}
			w.srv = lab.Host(lab.Public())
			nat := lab.NAT(natlab.Random)
			w.cli = lab.Host(nat)
			ln := w.srv.ListenTCP(0)
			w.svcPort = uint16(ln.Addr().(*net.TCPAddr).Port)
			proctest.ServeOn(b, ln, func(c net.Conn) { serveWAN(c, 0) })
			addr := ""
			if name == "keytunnel" {
				addr = w.keytunnel(b)
			} else {
				addr = w.hypertele(b)
			}
			c, _ := w.firstEcho(b, addr)
			defer c.Close()
			rec, ok, alive := recoverAfter(b, c, nat.FlushConntrack)
			b.Logf("%s: recovered %v in %v after the conntrack flush; connection open at the end: %v", name, ok, rec.Round(time.Millisecond), alive)
			b.ReportMetric(float64(rec)/1e6, "recover-ms")
			b.ReportMetric(b2f(ok), "recovered")
			b.ReportMetric(b2f(alive), "conn-alive")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// recoverAfter echoes timestamped probes on c (an echo connection) every
// 20 ms, runs event after a second of them, and returns how long after
// it the echo of a probe written after it arrived (roamLimit if none
// did), and whether c was still open at the end.
func recoverAfter(tb testing.TB, c net.Conn, event func()) (time.Duration, bool, bool) {
	tb.Helper()
	c.SetDeadline(time.Now().Add(roamLimit + 30*time.Second))
	var at atomic.Int64 // the event's time, UnixNano; 0 before it
	got := make(chan time.Time, 1)
	rerr, werr := make(chan error, 2), make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		var rec [8]byte
		for {
			if _, err := io.ReadFull(c, rec[:]); err != nil {
				rerr <- err
				return
			}
			if e := at.Load(); e != 0 && int64(binary.BigEndian.Uint64(rec[:])) > e {
				select {
				case got <- time.Now():
				default:
				}
			}
		}
	}()
	stop := make(chan struct{})
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var rec [8]byte
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			binary.BigEndian.PutUint64(rec[:], uint64(time.Now().UnixNano()))
			if _, err := c.Write(rec[:]); err != nil {
				werr <- err
				return
			}
		}
	}()
	time.Sleep(time.Second)
	start := time.Now()
	event()
	at.Store(start.UnixNano())
	var rec time.Duration
	ok := false
	select {
	case t := <-got:
		rec, ok = t.Sub(start), true
	case <-time.After(roamLimit):
		rec = roamLimit
	case err := <-rerr:
		tb.Logf("the connection failed %v after the event: %v", time.Since(start).Round(time.Millisecond), err)
		rec = roamLimit
		rerr <- err
	}
	// Is it still open? Give it a moment to fail if it is failing.
	time.Sleep(200 * time.Millisecond)
	alive := true
	select {
	case err := <-rerr:
		alive = false
		tb.Logf("connection read: %v", err)
	default:
	}
	select {
	case err := <-werr:
		alive = false
		tb.Logf("connection write: %v", err)
	default:
	}
	close(stop)
	c.Close()
	wg.Wait()
	return rec, ok, alive
}
