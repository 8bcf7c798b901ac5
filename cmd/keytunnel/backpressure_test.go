package main

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// Backpressure end to end: a sender pushes bpSize bytes as fast as it can
// through forward → expose to a service that reads at bpRate. Nothing on
// the way may buffer what the reader has not taken: each keytunnel process
// stays under bpMaxRSS peak RSS (64 MB; more under -race, whose binary
// carries the race detector's shadow memory), and the sender is held back
// to the reader's pace (what it has sent minus what the reader has read
// stays within the kernel's socket buffers and the tunnel's windows).
//
// bpMaxInFlight is those: the loopback TCP legs at either end (up to
// ~20 MB of socket buffers), udx's, and a yamux stream window that may
// grow to tunnel's maxWindow (16 MiB, 3x the BDP of a 100 ms, 100 Mbit/s
// path); with 2 MiB windows 32 MiB sufficed, with 16 MiB a run reached
// 50.1 MB.
const bpMaxInFlight = 56 << 20

// slowSink reads the connections it accepts at rate bytes/s each; done is
// closed when one that carried data ends. (Connections without data are
// expose's check that the target listens.)
type slowSink struct {
	addr string
	got  atomic.Int64
	done chan struct{}
}

func newSlowSink(t *testing.T, rate float64) *slowSink {
	t.Helper()
	s := &slowSink{done: make(chan struct{})}
	stop := make(chan struct{})
	var once sync.Once
	s.addr = proctest.Serve(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		start := time.Now()
		var total int64
		for {
			n, err := c.Read(buf)
			total += int64(n)
			s.got.Add(int64(n))
			if err != nil {
				if total > 0 {
					once.Do(func() { close(s.done) })
				}
				return
			}
			due := start.Add(time.Duration(float64(total) / rate * float64(time.Second)))
			select {
			case <-time.After(time.Until(due)):
			case <-stop:
				return
			}
		}
	})
	// Registered after Serve's, so it runs first: paced handlers stop
	// waiting before the listener's cleanup waits for them.
	t.Cleanup(func() { close(stop) })
	return s
}

type bpResult struct {
	sendTime, total time.Duration
	maxInFlight     int64
}

// push sends size bytes to addr and waits until the sink has them all,
// sampling sent minus received.
func push(t *testing.T, addr string, sink *slowSink, size int64) bpResult {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sent atomic.Int64
	sendDone := make(chan error, 1)
	start := time.Now()
	var r bpResult
	go func() {
		buf := make([]byte, 64<<10)
		for sent.Load() < size {
			n, err := c.Write(buf[:min(int64(len(buf)), size-sent.Load())])
			sent.Add(int64(n))
			if err != nil {
				sendDone <- err
				return
			}
		}
		r.sendTime = time.Since(start)
		sendDone <- c.(*net.TCPConn).CloseWrite()
	}()
	limit := time.After(time.Duration(float64(size)/bpRate*float64(time.Second))*2 + 60*time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	sending := true
	for {
		select {
		case err := <-sendDone:
			if err != nil {
				t.Fatalf("sender after %d bytes: %v", sent.Load(), err)
			}
			sending = false
			sendDone = nil
		case <-sink.done:
			r.total = time.Since(start)
			if got := sink.got.Load(); got != size {
				t.Fatalf("the reader got %d bytes of %d", got, size)
			}
			if sending {
				t.Fatal("the reader saw EOF before the sender finished")
			}
			return r
		case <-tick.C:
			if d := sent.Load() - sink.got.Load(); d > r.maxInFlight {
				r.maxInFlight = d
			}
		case <-limit:
			t.Fatalf("not done in time: sent %d, read %d of %d", sent.Load(), sink.got.Load(), size)
		}
	}
}

func TestE2EBackpressure(t *testing.T) {
	bs := proctest.Testnet(t, 4)
	sink := newSlowSink(t, bpRate)
	ex, pub := proctest.Expose(t, bs, sink.addr)
	fw, local := proctest.Forward(t, bs, pub)
	r := push(t, local, sink, bpSize)
	mb := func(n int64) float64 { return float64(n) / 1e6 }
	t.Logf("%d MiB to a %.0f MB/s reader: sender done after %v (%.1f MB/s), reader after %v; max in flight %.1f MB",
		bpSize>>20, bpRate/1e6, r.sendTime.Round(time.Millisecond), mb(bpSize)/r.sendTime.Seconds(), r.total.Round(time.Millisecond), mb(r.maxInFlight))
	for _, p := range []*proctest.Proc{ex, fw} {
		hwm, err := proctest.HWM(p.Pid())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: VmHWM %.1f MB", p.Cmd.Args[2], mb(hwm))
		if hwm > bpMaxRSS {
			t.Errorf("%s: peak RSS %.1f MB, want under %.0f MB", p.Cmd.Args[2], mb(hwm), mb(bpMaxRSS))
		}
	}
	if r.maxInFlight > bpMaxInFlight {
		t.Errorf("up to %.1f MB were sent but not read: something buffers (limit %.0f MB)", mb(r.maxInFlight), mb(bpMaxInFlight))
	}
	// Held back: the sender cannot finish much before the reader could
	// have read all but what is in flight.
	if minSend := time.Duration(float64(bpSize-bpMaxInFlight) / bpRate * float64(time.Second)); r.sendTime < minSend*9/10 {
		t.Errorf("the sender finished after %v, faster than the reader allows (%v)", r.sendTime, minSend)
	}
}

// TestE2EBackpressureHypertele measures the same push through hypertele's
// client and server, for README; it asserts nothing about their memory.
func TestE2EBackpressureHypertele(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	sink := newSlowSink(t, bpRate)
	_, port, _ := net.SplitHostPort(sink.addr)
	seed, pub := rawSeed(t)
	boot := proctest.FirstPort(t, bs)
	srv := nodetest.Start(t, "node_modules/hypertele/server.js", "-l", port, "--seed", seed, "--bootstrap", boot)
	srv.Expect("hypertele:", 60*time.Second)
	cli := nodetest.Start(t, "node_modules/hypertele/client.js", "-p", "0", "-s", pub.String(), "--bootstrap", boot)
	local := cli.Expect("Server ready @", 60*time.Second)
	r := push(t, local, sink, bpSize)
	mb := func(n int64) float64 { return float64(n) / 1e6 }
	t.Logf("hypertele: %d MiB to a %.0f MB/s reader: sender done after %v (%.1f MB/s), reader after %v; max in flight %.1f MB",
		bpSize>>20, bpRate/1e6, r.sendTime.Round(time.Millisecond), mb(bpSize)/r.sendTime.Seconds(), r.total.Round(time.Millisecond), mb(r.maxInFlight))
	for name, p := range map[string]*nodetest.Proc{"hypertele client": cli, "hypertele-server": srv} {
		hwm, err := proctest.HWM(p.Pid())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: VmHWM %.1f MB", name, mb(hwm))
	}
}
