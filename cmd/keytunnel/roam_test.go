package main

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// badLinkRig is `keytunnel expose` in front of an echo service and
// `keytunnel forward`, one on a public lab host and the other on a host
// behind a randomizing NAT (so every new mapping has a new port),
// connected directly: the public one is open, no holepunch needed. By
// default the client (forward) is behind the NAT; cliOpts attach the
// client host (natlab.WAN: an emulated link).
type badLinkRig struct {
	lab    *natlab.Lab
	srv    *natlab.Host
	cli    *natlab.Host
	nat    *natlab.Net
	natted *natlab.Host   // the one behind nat
	local  netip.AddrPort // forward's address on cli
}

func newBadLinkRig(t *testing.T, cliOpts ...natlab.Option) *badLinkRig {
	t.Helper()
	return newBadLinkRigWith(t, false, cliOpts...)
}

// newBadLinkRigWith is newBadLinkRig with the server behind the NAT and
// the client public when serverNATted.
func newBadLinkRigWith(t *testing.T, serverNATted bool, cliOpts ...natlab.Option) *badLinkRig {
	t.Helper()
	natlab.Require(t)
	bin := proctest.Binary(t)
	lab := natlab.New(t)
	env := proctest.Env(t, proctest.LabDHT(t, lab))
	r := &badLinkRig{lab: lab, nat: lab.NAT(natlab.Random)}
	if serverNATted {
		r.srv, r.cli = lab.Host(r.nat), lab.Host(lab.Public(), cliOpts...)
		r.natted = r.srv
	} else {
		r.srv, r.cli = lab.Host(lab.Public()), lab.Host(r.nat, cliOpts...)
		r.natted = r.cli
	}
	ln := r.srv.ListenTCP(0)
	proctest.ServeOn(t, ln, func(c net.Conn) {
		// The test's own deadline on the client side bounds it; this
		// one only frees a handler whose client vanished.
		c.SetDeadline(time.Now().Add(30 * time.Minute))
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	_, pub := labExpose(t, bin, env, r.srv, ln.Addr().(*net.TCPAddr).Port, "--json")
	_, r.local = labForward(t, bin, env, r.cli, pub, "--json")
	return r
}

// dial connects to forward from the client host and checks the tunnel
// with one echo.
func (r *badLinkRig) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := r.cli.DialTCP(r.local, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	proctest.RoundTrip(t, c, "hello")
	return c
}

// pacedEcho streams seeded random bytes through an echo connection at a
// steady rate (chunk every tick) while reading them back, and notes when
// each chunk of echo arrived, so a stall shows as a gap.
type pacedEcho struct {
	c         net.Conn
	chunk     int
	tick      time.Duration
	total     int
	start     time.Time
	mu        sync.Mutex
	arrivals  []time.Time
	sent, got [32]byte
	n         int64
	werr      error
	rerr      error
	done      chan struct{}
}

func startPacedEcho(c net.Conn, chunk int, tick time.Duration, total int, limit time.Duration) *pacedEcho {
	p := &pacedEcho{c: c, chunk: chunk, tick: tick, total: total, start: time.Now(), done: make(chan struct{})}
	c.SetDeadline(time.Now().Add(limit))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		h := sha256.New()
		rng := rand.NewChaCha8([32]byte{'r', 'o', 'a', 'm'})
		buf := make([]byte, chunk)
		next := time.Now()
		for sent := 0; sent < total; sent += chunk {
			rng.Read(buf)
			h.Write(buf)
			if _, err := c.Write(buf); err != nil {
				p.werr = err
				return
			}
			next = next.Add(tick)
			time.Sleep(time.Until(next))
		}
		p.sent = [32]byte(h.Sum(nil))
		p.werr = c.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			k, err := c.Read(buf)
			if k > 0 {
				h.Write(buf[:k])
				p.n += int64(k)
				p.mu.Lock()
				p.arrivals = append(p.arrivals, time.Now())
				p.mu.Unlock()
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				p.rerr = err
				return
			}
		}
		p.got = [32]byte(h.Sum(nil))
	}()
	go func() { wg.Wait(); close(p.done) }()
	return p
}

// wait waits for the echo to finish and checks that every byte came back
// once, in order, without an error on the connection (a reset).
func (p *pacedEcho) wait(t *testing.T) {
	t.Helper()
	<-p.done // the connection's deadline bounds it
	if p.werr != nil || p.rerr != nil {
		t.Fatalf("tunnelled connection failed after %d of %d bytes echoed: write: %v, read: %v", p.n, p.total, p.werr, p.rerr)
	}
	if p.n != int64(p.total) || p.got != p.sent {
		t.Fatalf("echoed %d bytes of %d, SHA-256 equal: %v", p.n, p.total, p.got == p.sent)
	}
}

// stall is the longest gap without an arrival of echo between at and
// until.
func (p *pacedEcho) stall(at, until time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var worst time.Duration
	prev := at
	for _, a := range p.arrivals {
		if a.Before(at) {
			continue
		}
		if a.After(until) {
			break
		}
		worst = max(worst, a.Sub(prev))
		prev = a
	}
	// Nothing since prev is a stall too.
	return max(worst, until.Sub(prev))
}

// TestNATLabRoaming: mid-transfer through a forward/expose tunnel, the
// NAT in front of one side forgets its mappings (conntrack flushed, so
// the next packet leaves from a new port), then that host's own address
// changes. The other side's stream follows to each new address once
// secret-stream has authenticated data that came from there
// (udx.FirewallRoam): the transfer, an echo at 3.2 MB/s each way, goes on
// with every byte back once (SHA-256), no tunnelled connection is reset
// (an idle one still echoes afterwards), and the longest stall after each
// change is under 2 s. client-moves: forward is behind the NAT and
// expose's stream follows it, on forward's data. server-moves: expose is,
// and forward's stream follows; the echo server has nothing new to send
// once the client's packets stop reaching it (they go to its old
// mapping), so what speaks for expose from its new address is the
// keepalive its stream asks for when the data it was receiving stops
// (udx.Stream.OnReceiveStall, after 200 ms here), not its next regular
// one up to 5 s later.
func TestNATLabRoaming(t *testing.T) {
	for _, c := range []struct {
		name         string
		serverNATted bool
		bound        time.Duration
	}{{"client-moves", false, 2 * time.Second}, {"server-moves", true, 2 * time.Second}} {
		t.Run(c.name, func(t *testing.T) {
			roaming(t, newBadLinkRigWith(t, c.serverNATted), c.bound)
		})
	}
}

func roaming(t *testing.T, r *badLinkRig, bound time.Duration) {
	idle := r.dial(t)
	active := r.dial(t)
	const chunk, tick = 32 << 10, 10 * time.Millisecond
	// 3.2 MB/s from 1.5 s before the flush until 1.5 s after the
	// second change could have recovered.
	gap := max(2500*time.Millisecond, bound+time.Second)
	total := int((3*time.Second+gap+bound)/tick) * chunk
	p := startPacedEcho(active, chunk, tick, total, 2*time.Minute)

	time.Sleep(1500 * time.Millisecond)
	flushed := time.Now()
	r.nat.FlushConntrack()
	time.Sleep(gap)
	oldAddr := r.natted.Addr()
	moved := time.Now()
	newAddr := r.natted.ChangeAddr()
	p.wait(t)
	proctest.RoundTrip(t, idle, "still here")

	s1, s2 := p.stall(flushed, moved), p.stall(moved, time.Now())
	t.Logf("%d MiB echoed in %v; longest stall after the conntrack flush %v, after the address change (%v -> %v) %v",
		total>>20, time.Since(p.start).Round(time.Millisecond), s1.Round(time.Millisecond), oldAddr, newAddr, s2.Round(time.Millisecond))
	for _, s := range []struct {
		what string
		d    time.Duration
	}{{"the conntrack flush", s1}, {"the address change", s2}} {
		if s.d >= bound {
			t.Errorf("the tunnel stalled %v after %s, want under %v", s.d, s.what, bound)
		}
	}
}

// TestNATLabDarkLink: the client host's link drops every packet for 30 s
// in the middle of a transfer through a forward/expose tunnel, then comes
// back. Nothing gives up meanwhile (udx retransmits for up to
// dht.StreamTimeout, yamux waits as long, see tunnel's doc): the transfer
// resumes within 5 s of the link's return (a retransmission is due at
// most two RTOs after it) with every byte back once, in order (SHA-256,
// count), and a connection that was idle throughout still echoes.
func TestNATLabDarkLink(t *testing.T) {
	r := newBadLinkRig(t)
	idle := r.dial(t)
	active := r.dial(t)
	const chunk, tick = 32 << 10, 10 * time.Millisecond
	const total = 400 * chunk // 4 s at 3.2 MB/s, when the link is up
	const dark = 30 * time.Second
	p := startPacedEcho(active, chunk, tick, total, 2*time.Minute)

	time.Sleep(1500 * time.Millisecond)
	r.cli.SetLoss(1)
	darkAt := time.Now()
	time.Sleep(dark)
	r.cli.SetLoss(0)
	back := time.Now()
	p.wait(t)
	proctest.RoundTrip(t, idle, "still here")

	resumed := p.stall(back, time.Now())
	during := p.arrivalsBetween(darkAt.Add(time.Second), back)
	t.Logf("%d MiB echoed in %v across %v of darkness; first echo %v after the link came back; %d chunks arrived while dark",
		total>>20, time.Since(p.start).Round(time.Millisecond), dark, resumed.Round(time.Millisecond), during)
	if during > 0 {
		t.Fatalf("%d chunks of echo arrived while the link was dark: the link was not dark", during)
	}
	if resumed >= 5*time.Second {
		t.Fatalf("the transfer resumed %v after the link came back, want under 5 s", resumed)
	}
}

// arrivalsBetween counts the echo arrivals in (from, to).
func (p *pacedEcho) arrivalsBetween(from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, a := range p.arrivals {
		if a.After(from) && a.Before(to) {
			n++
		}
	}
	return n
}

var wifiBadMiB = flag.Int("wifibad.mib", 16, "TestNATLabWifiBadDupReorder: MiB echoed (issue #12 asks 256; CI runs 16 to stay in its budget)")

// TestNATLabWifiBadDupReorder: an echo through forward/expose whose client
// sits on natlab's wifi-bad link (40 ms, 50 Mbit/s, 3 % loss in bursts)
// with 1 % of packets duplicated and 1 % reordered (held back 5 ms) each
// way on top: the bytes go both ways at once and come back intact
// (SHA-256, count). 16 MiB by default; -wifibad.mib=256 for the issue's
// full size:
//
//	go test -run TestNATLabWifiBadDupReorder ./cmd/keytunnel/ -wifibad.mib=256 -timeout 30m -v
func TestNATLabWifiBadDupReorder(t *testing.T) {
	prof := natlab.WifiBad
	prof.Name = "wifi-bad+dup+reorder"
	for _, im := range []*natlab.Impair{&prof.Up, &prof.Down} {
		im.Duplicate, im.Reorder = 0.01, 0.01
	}
	r := newBadLinkRig(t, natlab.WAN(prof))
	c := r.dial(t)
	size := *wifiBadMiB << 20
	// At least 1 MB/s, which the link carries with room to spare (it
	// measured 3-4 MB/s of echo each way).
	limit := 2*time.Minute + time.Duration(size/1e6)*time.Second
	p := startPacedEcho(c, 256<<10, 0, size, limit)
	p.wait(t)
	took := time.Since(p.start)
	up, down := r.cli.WAN().Stats(natlab.Up), r.cli.WAN().Stats(natlab.Down)
	t.Logf("%d MiB echoed through %s in %v (%.2f MB/s each way at once); link up %+v, down %+v",
		size>>20, prof.Name, took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6, linkCounts(up), linkCounts(down))
	for _, s := range []natlab.PipeStats{up, down} {
		if s.Duplicated == 0 || s.Reordered == 0 || s.Lost == 0 {
			t.Fatalf("the link did not impair: up %+v, down %+v", linkCounts(up), linkCounts(down))
		}
	}
}

// linkCounts is a PipeStats without its histogram, for logs.
func linkCounts(s natlab.PipeStats) string {
	return fmt.Sprintf("{in %d out %d lost %d queue-drops %d reordered %d duplicated %d}",
		s.In, s.Out, s.Lost, s.QueueDrops, s.Reordered, s.Duplicated)
}
