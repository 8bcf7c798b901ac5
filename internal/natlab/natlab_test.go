package natlab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// echoServer answers every datagram on h:port with the datagram followed by
// the sender's address as seen here: "<datagram> ip:port".
func echoServer(t *testing.T, h *Host, port uint16) netip.AddrPort {
	t.Helper()
	c := h.ListenUDP(port)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			reply := fmt.Sprintf("%s %s", buf[:n], from)
			if _, err := c.WriteToUDPAddrPort([]byte(reply), from); err != nil {
				return
			}
		}
	}()
	return h.AddrPort(port)
}

// ask sends a datagram from c to to and returns the address the echo server
// saw, or an invalid AddrPort if no answer came. Late answers to earlier
// questions are skipped.
func ask(t *testing.T, c *net.UDPConn, to netip.AddrPort) netip.AddrPort {
	t.Helper()
	nonce := fmt.Sprintf("q%d", askSeq.Add(1))
	for try := 0; try < 3; try++ {
		send(t, c, to, nonce)
		deadline := time.Now().Add(300 * time.Millisecond)
		for {
			got, ok := recv(t, c, time.Until(deadline))
			if !ok {
				break
			}
			q, addr, _ := strings.Cut(got, " ")
			if q != nonce {
				continue
			}
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				t.Fatalf("bad echo %q", got)
			}
			return ap
		}
	}
	return netip.AddrPort{}
}

var askSeq atomic.Int64

// recv reads one datagram within d.
func recv(t *testing.T, c *net.UDPConn, d time.Duration) (string, bool) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", false
		}
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n]), true
}

// expectNothing asserts no datagram reaches c within d.
func expectNothing(t *testing.T, c *net.UDPConn, d time.Duration, what string) {
	t.Helper()
	if got, ok := recv(t, c, d); ok {
		t.Fatalf("%s: got %q, want nothing", what, got)
	}
}

func send(t *testing.T, c *net.UDPConn, to netip.AddrPort, msg string) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte(msg), to); err != nil {
		t.Fatalf("send %q to %v: %v", msg, to, err)
	}
}

func expect(t *testing.T, c *net.UDPConn, want string) {
	t.Helper()
	got, ok := recv(t, c, 2*time.Second)
	if !ok || got != want {
		t.Fatalf("got %q (ok=%v), want %q", got, ok, want)
	}
}

func TestOpenHost(t *testing.T) {
	lab := New(t)
	a, b := lab.Host(lab.Public()), lab.Host(lab.Public())
	srv := echoServer(t, b, 7000)
	c := a.ListenUDP(5000)
	if got, want := ask(t, c, srv), a.AddrPort(5000); got != want {
		t.Fatalf("server saw %v, want %v (no NAT on the internet)", got, want)
	}
	if !PublicPrefix.Contains(a.Addr()) || a.PublicAddr() != a.Addr() {
		t.Fatalf("public host address %v / %v", a.Addr(), a.PublicAddr())
	}
}

func TestConsistentNAT(t *testing.T) {
	lab := New(t)
	pub := lab.Public()
	s1 := echoServer(t, lab.Host(pub), 7000)
	s2 := echoServer(t, lab.Host(pub), 7001)
	nat := lab.NAT(Consistent)
	h := lab.Host(nat)
	if h.PublicAddr() != nat.Addr() || h.Addr().As4()[0] != 10 {
		t.Fatalf("host %v behind %v", h.Addr(), nat.Addr())
	}
	for i := 0; i < 5; i++ {
		c := h.ListenUDP(0)
		m1, m2 := ask(t, c, s1), ask(t, c, s2)
		if !m1.IsValid() || !m2.IsValid() {
			t.Fatalf("no echo through the NAT: %v %v", m1, m2)
		}
		if m1.Addr() != nat.Addr() || m2.Addr() != nat.Addr() {
			t.Fatalf("servers saw %v and %v, want the NAT's address %v", m1, m2, nat.Addr())
		}
		if m1.Port() != m2.Port() {
			t.Fatalf("consistent NAT mapped one socket to %v and %v", m1, m2)
		}
		local := c.LocalAddr().(*net.UDPAddr).Port
		t.Logf("socket :%d mapped to %v for both destinations", local, m1)
	}
}

func TestRandomNAT(t *testing.T) {
	lab := New(t)
	pub := lab.Public()
	s1 := echoServer(t, lab.Host(pub), 7000)
	s2 := echoServer(t, lab.Host(pub), 7001)
	nat := lab.NAT(Random)
	h := lab.Host(nat)
	const tries = 20
	same, kept := 0, 0
	var ports []string
	for i := 0; i < tries; i++ {
		c := h.ListenUDP(0)
		local := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		m1, m2 := ask(t, c, s1), ask(t, c, s2)
		if m1.Addr() != nat.Addr() || m2.Addr() != nat.Addr() {
			t.Fatalf("servers saw %v and %v, want the NAT's address %v", m1, m2, nat.Addr())
		}
		if m1.Port() == m2.Port() {
			same++
		}
		if m1.Port() == local || m2.Port() == local {
			kept++
		}
		ports = append(ports, fmt.Sprintf("%d->%d/%d", local, m1.Port(), m2.Port()))
	}
	t.Logf("local->mapped ports (two destinations): %s", strings.Join(ports, " "))
	t.Logf("%d/%d sockets got the same port for both destinations, %d kept their own port", same, tries, kept)
	// A collision has odds of about 1 in 64k per socket.
	if same > 1 {
		t.Fatalf("random NAT gave %d/%d sockets one port for two destinations", same, tries)
	}
}

func TestSameNAT(t *testing.T) {
	lab := New(t)
	srv := echoServer(t, lab.Host(lab.Public()), 7000)
	nat := lab.NAT(Consistent)
	hs := lab.Hosts(nat, 2)
	a, b := hs[0], hs[1]
	ca, cb := a.ListenUDP(5000), b.ListenUDP(5000)
	ma, mb := ask(t, ca, srv), ask(t, cb, srv)
	if ma.Addr() != nat.Addr() || mb.Addr() != nat.Addr() {
		t.Fatalf("server saw %v and %v, want both from %v", ma, mb, nat.Addr())
	}
	if ma == mb {
		t.Fatalf("two hosts got the same mapping %v", ma)
	}
	t.Logf("two hosts with local port 5000 mapped to %v and %v", ma, mb)
	// On the LAN they reach each other directly, by LAN address.
	send(t, ca, b.AddrPort(5000), "hello b")
	expect(t, cb, "hello b")
	send(t, cb, a.AddrPort(5000), "hello a")
	expect(t, ca, "hello a")
}

func TestUnsolicitedAndHolepunch(t *testing.T) {
	lab := New(t)
	pub := lab.Public()
	rendezvous := echoServer(t, lab.Host(pub), 7000)
	open := lab.Host(pub)
	stranger := lab.Host(pub)
	natA, natB := lab.NAT(Consistent), lab.NAT(Consistent)
	a, b := lab.Host(natA), lab.Host(natB)
	co, cs := open.ListenUDP(6000), stranger.ListenUDP(6000)
	ca, cb := a.ListenUDP(5000), b.ListenUDP(5000)

	// Nothing reaches a NATed host unasked, nor its LAN address.
	send(t, co, netip.AddrPortFrom(natA.Addr(), 5000), "unsolicited")
	if _, err := co.WriteToUDPAddrPort([]byte("to a private address"), a.AddrPort(5000)); err == nil {
		t.Fatalf("a public host could send to the private address %v", a.Addr())
	}
	expectNothing(t, ca, 500*time.Millisecond, "unsolicited packet to the NAT")

	// a and b learn their mappings from the rendezvous server.
	ma, mb := ask(t, ca, rendezvous), ask(t, cb, rendezvous)
	if ma.Addr() != natA.Addr() || mb.Addr() != natB.Addr() {
		t.Fatalf("mappings %v %v", ma, mb)
	}
	// The mapping only admits the host a sent to (address-dependent filtering).
	send(t, co, ma, "still unsolicited")
	expectNothing(t, ca, 300*time.Millisecond, "packet from a host a never sent to")

	// Holepunch with an open host: a sends out, then the open host can reply
	// to the mapping it saw.
	send(t, ca, open.AddrPort(6000), "punch")
	got, ok := recv(t, co, 2*time.Second)
	if !ok || got != "punch" {
		t.Fatalf("open host got %q %v", got, ok)
	}
	send(t, co, ma, "through")
	expect(t, ca, "through")
	// ...but a stranger still cannot use the hole.
	send(t, cs, ma, "stranger")
	expectNothing(t, ca, 300*time.Millisecond, "stranger through a's hole")

	// Holepunch between two consistent NATs through the mappings learned
	// above: b's first packet dies at a's NAT (and leaves nothing behind
	// there), but opens b's NAT for a; a's packet then gets through, and
	// opens a's NAT for b.
	send(t, cb, ma, "b1")
	expectNothing(t, ca, 300*time.Millisecond, "b's first packet")
	send(t, ca, mb, "a1")
	expect(t, cb, "a1")
	send(t, cb, ma, "b2")
	expect(t, ca, "b2")
}

func TestRandomNATsCannotPunch(t *testing.T) {
	lab := New(t)
	rendezvous := echoServer(t, lab.Host(lab.Public()), 7000)
	natA, natB := lab.NAT(Random), lab.NAT(Random)
	a, b := lab.Host(natA), lab.Host(natB)
	ca, cb := a.ListenUDP(5000), b.ListenUDP(5000)
	ma, mb := ask(t, ca, rendezvous), ask(t, cb, rendezvous)
	// The mapping the rendezvous saw is not the one used towards the peer.
	send(t, cb, ma, "b1")
	send(t, ca, mb, "a1")
	send(t, cb, ma, "b2")
	expectNothing(t, ca, 300*time.Millisecond, "random to random via rendezvous mappings")
	expectNothing(t, cb, 300*time.Millisecond, "random to random via rendezvous mappings")
}

// count sends n datagrams from c to dst, paced so socket buffers never
// overflow, and returns how many sends failed and how many arrived at rc.
func count(t *testing.T, c *net.UDPConn, dst netip.AddrPort, rc *net.UDPConn, n int) (sendErrs, got int) {
	t.Helper()
	var received atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			// Generous: on a loaded CI machine (other packages run their
			// labs at the same time) a burst can take a while to drain,
			// and a late datagram must not be counted in the next check.
			rc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := rc.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	for i := 0; i < n; i++ {
		if _, err := c.WriteToUDPAddrPort([]byte("x"), dst); err != nil {
			sendErrs++
		}
		if i%50 == 49 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	<-done
	return sendErrs, int(received.Load())
}

func TestLoss(t *testing.T) {
	lab := New(t)
	pub := lab.Public()
	nat := lab.NAT(Consistent)
	lossy, peer := lab.Host(nat), lab.Host(pub)
	cl, cp := lossy.ListenUDP(5000), peer.ListenUDP(6000)
	const n = 1000
	check := func(name string, from *net.UDPConn, to netip.AddrPort, at *net.UDPConn, lo, hi int) {
		t.Helper()
		errs, got := count(t, from, to, at, n)
		t.Logf("%s: %d/%d arrived, %d send errors", name, got, n, errs)
		if errs != 0 {
			t.Errorf("%s: %d sends failed; loss must be silent", name, errs)
		}
		if got < lo || got > hi {
			t.Errorf("%s: %d/%d arrived, want %d..%d", name, got, n, lo, hi)
		}
	}
	// Baseline, which also opens the NAT for the peer's packets.
	check("no loss, out", cl, peer.AddrPort(6000), cp, n, n)
	check("no loss, in", cp, netip.AddrPortFrom(nat.Addr(), 5000), cl, n, n)

	lossy.SetLoss(0.5) // mean 500, sd 16: 400..600 is over 6 sd
	check("SetLoss(0.5), out", cl, peer.AddrPort(6000), cp, 400, 600)
	check("SetLoss(0.5), in", cp, netip.AddrPortFrom(nat.Addr(), 5000), cl, 400, 600)

	lossy.SetLoss(0)
	lossy.SetLossIn(0.2)
	check("SetLossIn(0.2), out", cl, peer.AddrPort(6000), cp, n, n)
	check("SetLossIn(0.2), in", cp, netip.AddrPortFrom(nat.Addr(), 5000), cl, 720, 880)
	lossy.SetLossIn(0)
	lossy.SetLossOut(0.9)
	check("SetLossOut(0.9), out", cl, peer.AddrPort(6000), cp, 50, 150)
	check("SetLossOut(0.9), in", cp, netip.AddrPortFrom(nat.Addr(), 5000), cl, n, n)
}

func TestDropUDP(t *testing.T) {
	lab := New(t)
	pub := lab.Public()
	srv := lab.Host(pub)
	echo := echoServer(t, srv, 7000)
	ln := srv.ListenTCP(8000)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	for _, h := range []*Host{lab.Host(pub), lab.Host(lab.NAT(Consistent))} {
		c := h.ListenUDP(0)
		if !ask(t, c, echo).IsValid() {
			t.Fatalf("%v: no UDP before DropUDP", h.Addr())
		}
		h.DropUDP()
		if got := ask(t, c, echo); got.IsValid() {
			t.Fatalf("%v: UDP echo %v after DropUDP", h.Addr(), got)
		}
		// Inbound too: the server sends to the host's last mapping.
		tc, err := h.DialTCP(srv.AddrPort(8000), 2*time.Second)
		if err != nil {
			t.Fatalf("%v: TCP after DropUDP: %v", h.Addr(), err)
		}
		tc.SetDeadline(time.Now().Add(2 * time.Second))
		msg := []byte("tcp still works")
		if _, err := tc.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(tc, buf); err != nil || !bytes.Equal(buf, msg) {
			t.Fatalf("%v: TCP echo %q %v", h.Addr(), buf, err)
		}
		tc.Close()
		// Loopback UDP inside the host is not the link: it still works.
		lo := h.ListenUDP(0)
		send(t, c, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(lo.LocalAddr().(*net.UDPAddr).Port)), "lo")
		expect(t, lo, "lo")
		h.AllowUDP()
		if !ask(t, c, echo).IsValid() {
			t.Fatalf("%v: no UDP after AllowUDP", h.Addr())
		}
	}
}

// BlockUDPWith cuts UDP between a NAT and one peer only, both ways.
func TestBlockUDPWith(t *testing.T) {
	lab := New(t)
	pub := lab.Public()
	a, b := lab.Host(pub), lab.Host(pub)
	echoA, echoB := echoServer(t, a, 7000), echoServer(t, b, 7000)
	nat := lab.NAT(Consistent)
	c := lab.Host(nat).ListenUDP(0)
	nat.BlockUDPWith(a.Addr())
	if got := ask(t, c, echoA); got.IsValid() {
		t.Fatalf("UDP echo %v from the blocked peer", got)
	}
	if !ask(t, c, echoB).IsValid() {
		t.Fatal("no UDP with a peer that is not blocked")
	}
	nat.UnblockUDPWith(a.Addr())
	if !ask(t, c, echoA).IsValid() {
		t.Fatal("no UDP after UnblockUDPWith")
	}
}

// rootState is what the lab must never change in the root namespace.
func rootState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{IptablesBackend() + "-save"},
		{"ip", "-4", "rule"},
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "-o", "link"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "#") { // iptables-save timestamps
				continue
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func TestCleanup(t *testing.T) {
	Require(t)
	before := rootState(t)
	if own := OwnNamespaces(); len(own) != 0 {
		t.Fatalf("namespaces left by earlier tests: %v", own)
	}
	var sleeper *exec.Cmd
	t.Run("lab", func(t *testing.T) {
		lab := New(t)
		a := lab.Host(lab.NAT(Random))
		b := lab.Host(lab.Public())
		b.SetLoss(0.1)
		a.DropUDP()
		a.ListenUDP(5000)
		// A process left running in a namespace must not keep it alive.
		sleeper = a.Command("sleep", "600")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		if n := len(OwnNamespaces()); n != 4 {
			t.Fatalf("%d namespaces, want 4 (internet, NAT, two hosts): %v", n, OwnNamespaces())
		}
	})
	t.Run("skipped midway", func(t *testing.T) {
		lab := New(t)
		lab.Host(lab.NAT(Consistent))
		t.Skip("leaving early must still tear the lab down")
	})
	if own := OwnNamespaces(); len(own) != 0 {
		t.Errorf("namespaces left after the subtests: %v", own)
	}
	if sleeper != nil {
		done := make(chan error, 1)
		go func() { done <- sleeper.Wait() }()
		select {
		case err := <-done:
			t.Logf("process left in the lab: %v", err)
		case <-time.After(5 * time.Second):
			t.Errorf("process in the lab still running after teardown")
			sleeper.Process.Kill()
		}
	}
	if after := rootState(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestSweepStale(t *testing.T) {
	Require(t)
	// A pid above the kernel's pid_max cannot be running.
	name := fmt.Sprintf("%s%d-1-pub", prefix, 1<<23)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	removed := sweep()
	for _, n := range Namespaces() {
		if n == name {
			t.Fatalf("stale namespace %s survived the sweep (removed %v)", name, removed)
		}
	}
}

func TestNodeInsideHost(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node is not on PATH")
		}
		t.Skip("node is not on PATH")
	}
	lab := New(t)
	srvHost := lab.Host(lab.Public())
	srv := echoServer(t, srvHost, 7000)
	nat := lab.NAT(Consistent)
	h := lab.Host(nat)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	script := `
const s = require('dgram').createSocket('udp4')
s.on('message', (m) => { console.log(String(m)); process.exit(0) })
s.bind(0, () => s.send('hi', +process.argv[2], process.argv[1]))
setTimeout(() => { console.log('timeout'); process.exit(1) }, 5000)
`
	cmd := h.Command("node", "-e", script, srv.Addr().String(), fmt.Sprint(srv.Port()))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		cmd.Process.Kill()
	}()
	err := cmd.Wait()
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatalf("node: %v: %s", err, out.String())
	}
	_, addr, _ := strings.Cut(strings.TrimSpace(out.String()), " ")
	seen, perr := netip.ParseAddrPort(addr)
	if perr != nil || seen.Addr() != nat.Addr() {
		t.Fatalf("node's packet seen from %q, want the NAT address %v", out.String(), nat.Addr())
	}
	t.Logf("node behind the NAT reached %v and was seen as %v", srv, seen)
}

func TestNATUplink(t *testing.T) {
	lab := New(t)
	peer := lab.Host(lab.Public())
	nat := lab.NAT(Consistent)
	a, b := lab.Host(nat), lab.Host(nat)
	cp, ca, cb := peer.ListenUDP(6000), a.ListenUDP(5000), b.ListenUDP(5000)
	if _, got := count(t, ca, peer.AddrPort(6000), cp, 200); got != 200 {
		t.Fatalf("baseline: %d/200", got)
	}
	nat.SetLossOut(0.5)
	_, got := count(t, ca, peer.AddrPort(6000), cp, 1000)
	t.Logf("NAT uplink SetLossOut(0.5): %d/1000 arrived", got)
	if got < 400 || got > 600 {
		t.Errorf("NAT uplink SetLossOut(0.5): %d/1000 arrived, want 400..600", got)
	}
	// The uplink does not carry LAN traffic.
	if _, got := count(t, ca, b.AddrPort(5000), cb, 200); got != 200 {
		t.Errorf("LAN traffic under uplink loss: %d/200", got)
	}
	nat.SetLoss(0)
	nat.DropUDP()
	if _, got := count(t, ca, peer.AddrPort(6000), cp, 100); got != 0 {
		t.Errorf("UDP through a NAT with DropUDP: %d/100", got)
	}
	if _, got := count(t, ca, b.AddrPort(5000), cb, 100); got != 100 {
		t.Errorf("LAN UDP behind a NAT with DropUDP: %d/100", got)
	}
	nat.AllowUDP()
	if _, got := count(t, ca, peer.AddrPort(6000), cp, 100); got != 100 {
		t.Errorf("after AllowUDP: %d/100", got)
	}
}

// TestIsolated checks, without sending anything, that no namespace of a lab
// has a route out of it.
func TestIsolated(t *testing.T) {
	lab := New(t)
	pubHost := lab.Host(lab.Public())
	nat := lab.NAT(Random)
	natHost := lab.Host(nat)
	outside := "1.1.1.1"
	for _, ns := range []string{lab.Public().Namespace(), pubHost.Namespace(), nat.Namespace()} {
		out, err := exec.Command("ip", "-n", ns, "route", "get", outside).CombinedOutput()
		if err == nil {
			t.Errorf("%s has a route to %s: %s", ns, outside, out)
		}
	}
	// A NAT host's default route ends at its NAT, which has none.
	out, err := exec.Command("ip", "-n", natHost.Namespace(), "route", "get", outside).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "via "+nat.Gateway().String()) {
		t.Errorf("NAT host route to %s: %s %v", outside, out, err)
	}
}

// nodeProc runs testdata/hyperdht.js in h with interop/ as working
// directory and returns a channel of its output lines.
func nodeProc(t *testing.T, h *Host, interop string, args ...string) <-chan string {
	t.Helper()
	script, err := filepath.Abs("testdata/hyperdht.js")
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command("node", append([]string{script}, args...)...)
	cmd.Dir = interop
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

func waitLine(t *testing.T, lines <-chan string, prefix string, d time.Duration) string {
	t.Helper()
	l, err := nextLine(t, lines, prefix, d)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// nextLine is waitLine that returns what went wrong instead of failing.
func nextLine(t *testing.T, lines <-chan string, prefix string, d time.Duration) (string, error) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return "", fmt.Errorf("node exited before printing %q", prefix)
			}
			t.Logf("node: %s", l)
			if strings.HasPrefix(l, "error") {
				return "", fmt.Errorf("node: %s", l)
			}
			if strings.HasPrefix(l, prefix) {
				return strings.TrimPrefix(l, prefix), nil
			}
		case <-timeout:
			return "", fmt.Errorf("no %q from node within %v", prefix, d)
		}
	}
}

// TestHyperDHTHolepunch runs the Node reference in the lab: a testnet on the
// internet, a server and a client behind two consistent NATs, which must
// connect directly (holepunched), not through a relay.
func TestHyperDHTHolepunch(t *testing.T) {
	for _, c := range []struct{ server, client Kind }{
		{Consistent, Consistent},
		{Consistent, Random},
		{Random, Consistent},
	} {
		t.Run(fmt.Sprintf("%v server, %v client", c.server, c.client), func(t *testing.T) {
			hyperdhtPunch(t, c.server, c.client)
		})
	}
}

func hyperdhtPunch(t *testing.T, server, client Kind) {
	interop := nodetest.Require(t)
	lab := New(t)
	boot := lab.Host(lab.Public())
	natA, natB := lab.NAT(server), lab.NAT(client)
	srv, cli := lab.Host(natA), lab.Host(natB)
	bs := []string{boot.Addr().String(), "49737"}
	waitLine(t, nodeProc(t, boot, interop, append([]string{"testnet"}, append(bs, "5")...)...), "ready", 30*time.Second)
	// Behind a randomizing NAT the reference punches by the birthday
	// paradox, which fails now and then (CI runs saw no echo in 30 s):
	// another try gets a fresh server as well as a fresh client, since
	// a server still punching with the last client answers the next with
	// "try later", which a client without a relay turns into
	// HOLEPUNCH_ABORTED at once (hyperdht lib/connect.js tryLater; CI
	// saw that twice in a row). The lab is what this validates; three
	// failures in a row are not chance.
	tries := 1
	if server == Random || client == Random {
		tries = 3
	}
	var echo string
	var err error
	for i := range tries {
		key := waitLine(t, nodeProc(t, srv, interop, append([]string{"server"}, bs...)...), "key ", 30*time.Second)
		echo, err = nextLine(t, nodeProc(t, cli, interop, append([]string{"client"}, append(bs, key)...)...), "echo ", 30*time.Second)
		if err == nil {
			break
		}
		t.Logf("client %d of %d: %v", i+1, tries, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	msg, remote, _ := strings.Cut(echo, " ")
	if msg != "hello" {
		t.Fatalf("echo %q", echo)
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil || ap.Addr() != natA.Addr() {
		t.Fatalf("client's stream goes to %q, want the server's NAT %v (a direct, holepunched path)", remote, natA.Addr())
	}
}
