package tunnel

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
)

// BenchmarkStreamOpen measures what opening one tunnelled TCP connection
// costs, up to its first echoed byte: a new stream on the established peer
// session (mux) against a new peer connection per TCP connection (raw, as
// hypertele does). The fake DHT's Dial is a loopback TCP connect, so the
// raw numbers are a lower bound; the dial-latency variants add what a DHT
// lookup and handshake cost on top, which mux pays once per session.
func BenchmarkStreamOpen(b *testing.B) {
	for _, lat := range []time.Duration{0, 5 * time.Millisecond} {
		for _, raw := range []bool{false, true} {
			name := "mux-session"
			if raw {
				name = "raw-peer-conn-per-tcp"
			}
			b.Run(name+"/dial-latency="+lat.String(), func(b *testing.B) {
				tg := newTarget(b, echo)
				r := newRig(b, tg.addr(), ExposeOptions{}, &ForwardOptions{Raw: raw})
				r.dialer.latency = lat
				openEcho(b, r.fwdAddr) // brings the mux session up
				b.ResetTimer()
				for b.Loop() {
					openEcho(b, r.fwdAddr)
				}
				b.StopTimer()
				b.ReportMetric(float64(r.n.dials.Load())/float64(b.N+1), "dials/op")
			})
		}
	}
}

// BenchmarkStreamOpenUDX is BenchmarkStreamOpen's mux case over the real
// transport (udx streams on loopback UDP, secretstream on top), all in one
// process: what a new connection through an established tunnel costs
// without process wake-ups, and how many udx packets it takes (both
// directions, ACKs included, open to close).
func BenchmarkStreamOpenUDX(b *testing.B) {
	tg := newTarget(b, echo)
	n := newUDXNet(b)
	ex := NewExposer(n, tg.addr(), ExposeOptions{Logger: testLogger(b, io.Discard)})
	b.Cleanup(func() { ex.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	fw := NewForwarder(n, n.server.Public, ln, ForwardOptions{Logger: testLogger(b, io.Discard)})
	b.Cleanup(func() { fw.Close() })
	openEcho(b, ln.Addr().String()) // brings the session up
	p0 := n.packets()
	b.ResetTimer()
	for b.Loop() {
		openEcho(b, ln.Addr().String())
	}
	b.StopTimer()
	b.ReportMetric(float64(n.packets()-p0)/float64(b.N), "udx-packets/op")
}

func openEcho(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var one [1]byte
	if _, err := c.Write([]byte{'x'}); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, one[:]); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLaneConn moves one stream's 16 KiB data frames through a pair
// of laneConns over loopback TCP (both lanes attached; the stream on lane
// B after its first 64 KiB), the frame routing a bulk transfer costs.
func BenchmarkLaneConn(b *testing.B) {
	pb, qb := conntest.TCPPair(b)
	pi, qi := conntest.TCPPair(b)
	tx, rx := newLaneConn(pb), newLaneConn(qb)
	defer tx.Close()
	defer rx.Close()
	if err := tx.attach(pi); err != nil {
		b.Fatal(err)
	}
	if err := rx.attach(qi); err != nil {
		b.Fatal(err)
	}
	frame := rawFrame(muxTypeData, 0, 1, make([]byte, 16<<10), 0)
	if _, err := tx.Write(rawFrame(muxTypeWindowUpdate, muxFlagSYN, 1, nil, 0)); err != nil {
		b.Fatal(err)
	}
	const perOp = 64 << 20
	total := int64(b.N)*int64(perOp/len(frame)*len(frame)) + muxHeaderSize
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 128<<10)
		var got int64
		for got < total {
			n, err := rx.Read(buf)
			if err != nil {
				done <- err
				return
			}
			got += int64(n)
		}
		done <- nil
	}()
	b.SetBytes(perOp)
	b.ResetTimer()
	for range b.N {
		for range perOp / len(frame) {
			if _, err := tx.Write(frame); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
