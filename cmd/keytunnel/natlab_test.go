package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// udpGetsThrough sends a datagram from h to to and reports whether it
// arrived within a second.
func udpGetsThrough(t *testing.T, h *natlab.Host, to *net.UDPConn, toAddr netip.AddrPort) bool {
	t.Helper()
	c := h.ListenUDP(0)
	defer c.Close()
	msg := []byte(fmt.Sprintf("probe from %v %d", h.Addr(), time.Now().UnixNano()))
	if _, err := c.WriteToUDPAddrPort(msg, toAddr); err != nil {
		t.Fatalf("udp probe from %v: %v", h.Addr(), err)
	}
	to.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 256)
	for {
		n, _, err := to.ReadFromUDPAddrPort(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == string(msg) {
			return true
		}
	}
}

// udpDrops sums the packet counters of the lab's UDP DROP rules in a
// router namespace (the links of the hosts behind it).
func udpDrops(t *testing.T, routerNS string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", routerNS, natlab.IptablesBackend()+"-save", "-c").CombinedOutput()
	if err != nil {
		t.Fatalf("%s-save in %s: %v\n%s", natlab.IptablesBackend(), routerNS, err, out)
	}
	re := regexp.MustCompile(`^\[(\d+):\d+\] -A kt-(in|out)-\S+ -p udp .*-j DROP`)
	total := 0
	for _, l := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	return total
}

// udpSockets lists the UDP sockets of pid's network namespace
// (/proc/<pid>/net/udp, IPv4 and IPv6).
func udpSockets(t *testing.T, pid int) []string {
	t.Helper()
	var socks []string
	for _, f := range []string{"udp", "udp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Scan() // header
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				socks = append(socks, f+": "+l)
			}
		}
	}
	return socks
}

// TestNATLabRelayedNoUDP: `keytunnel expose` and `keytunnel forward`, each
// in a lab host behind its own NAT whose UDP is dropped, reach the DHT
// only through `keytunnel dht-relay` processes on a public host and
// carry 64 MiB intact from a service behind expose to a client of forward:
// custodial (expose over tcp://, forward over ws://), then with
// --relay-noncustodial and the transports swapped. The drop is shown to work (a UDP
// probe gets through before it and not after, and the routers' drop
// counters grow) and neither process's namespace has a UDP socket.
func TestNATLabRelayedNoUDP(t *testing.T) {
	natlab.Require(t)
	bin := proctest.Binary(t)
	deadline := time.Now().Add(4 * time.Minute)
	lab := natlab.New(t)
	boot := proctest.LabDHT(t, lab)

	// Two relays on one public host, each with its own DHT node.
	r := lab.Host(lab.Public())
	relay := func(port int, ws bool) string {
		args := []string{"--json", "dht-relay", "--port", strconv.Itoa(port), "--host", r.Addr().String()}
		if ws {
			args = append(args, "--ws")
		}
		p := proctest.StartCmd(t, r.Command(bin, args...), proctest.Env(t, boot))
		ev := proctest.JSON(t, p.Line(`"event":"dht-relay"`, 60*time.Second))
		u, _ := ev["address"].(string)
		if u == "" {
			t.Fatalf("dht-relay: %v", ev)
		}
		return u
	}
	tcpURL, wsURL := relay(49443, false), relay(49444, true)
	t.Logf("relays %s and %s on %v", tcpURL, wsURL, r.Addr())

	e := lab.Host(lab.NAT(natlab.Consistent)) // expose
	f := lab.Host(lab.NAT(natlab.Consistent)) // forward
	sink := r.ListenUDP(0)
	sinkAddr := r.AddrPort(uint16(sink.LocalAddr().(*net.UDPAddr).Port))
	for _, h := range []*natlab.Host{e, f} {
		if !udpGetsThrough(t, h, sink, sinkAddr) {
			t.Fatalf("UDP from %v does not get through before the drop: the probe is blind", h.Addr())
		}
		h.DropUDP()
		if udpGetsThrough(t, h, sink, sinkAddr) {
			t.Fatalf("UDP from %v gets through after DropUDP", h.Addr())
		}
	}
	dropsBefore := udpDrops(t, e.Net().Namespace()) + udpDrops(t, f.Net().Namespace())
	if dropsBefore == 0 {
		t.Fatal("the drop counters did not count the probes")
	}

	// Custodial, then non-custodial with the transports swapped.
	env := proctest.Env(t, boot)
	for _, m := range []struct {
		name              string
		exposeURL, fwdURL string
		extra             []string
	}{
		{"custodial", tcpURL, wsURL, nil},
		{"noncustodial", wsURL, tcpURL, []string{"--relay-noncustodial"}},
	} {
		t.Run(m.name, func(t *testing.T) {
			relayedTransfer(t, bin, env, e, f, m.exposeURL, m.fwdURL, m.extra, deadline)
		})
	}
	drops := udpDrops(t, e.Net().Namespace()) + udpDrops(t, f.Net().Namespace())
	t.Logf("UDP drops on the relayed hosts' links: %d (probes: %d)", drops, dropsBefore)
	if drops < dropsBefore {
		t.Fatalf("drop counters went back: %d < %d", drops, dropsBefore)
	}
}

// relayedTransfer runs expose on e (through exposeURL) in front of a
// service that sends 64 MiB and forward on f (through fwdURL), reads
// the bytes through the forward and checks them, and that neither
// namespace has a UDP socket.
func relayedTransfer(t *testing.T, bin string, env []string, e, f *natlab.Host, exposeURL, fwdURL string, extra []string, deadline time.Time) {
	const size = 64 << 20
	svcPort, want := sendingService(t, e, size)

	// The lab bootstrap is in the environment: were --relay ignored, the
	// processes would try UDP, which the drop stops.
	args := append([]string{"--json", "--relay", exposeURL}, extra...)
	exp, pub := labExpose(t, bin, env, e, svcPort, args...)
	args = append([]string{"--json", "--relay", fwdURL}, extra...)
	fwd, local := labForward(t, bin, env, f, pub, args...)

	took := readChecked(t, f, local, size, want, deadline)
	expSocks, fwdSocks := udpSockets(t, exp.Pid()), udpSockets(t, fwd.Pid())
	t.Logf("64 MiB intact in %v (%.1f MB/s), expose through %s, forward through %s %v; UDP sockets: expose side %d, forward side %d",
		took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6, exposeURL, fwdURL, extra, len(expSocks), len(fwdSocks))
	if len(expSocks) != 0 || len(fwdSocks) != 0 {
		t.Fatalf("UDP sockets in the relayed hosts' namespaces:\n%s", strings.Join(append(expSocks, fwdSocks...), "\n"))
	}
}

// sendingService listens on h and, on every connection whose client
// sends a byte first, sends size seeded random bytes; want gets their
// SHA-256 when one connection took them all. (The client speaks first:
// a server that speaks first decides the mode of a keytunnel client whose
// preamble is late, see tunnel/doc.go.)
func sendingService(t *testing.T, h *natlab.Host, size int) (port int, want chan [32]byte) {
	svc := h.ListenTCP(0)
	want = make(chan [32]byte, 1)
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(3 * time.Minute))
				if _, err := c.Read(make([]byte, 1)); err != nil {
					return // expose's check that the target listens
				}
				hash := sha256.New()
				rng := rand.NewChaCha8([32]byte{'k', 't'})
				buf := make([]byte, 256<<10)
				for sent := 0; sent < size; sent += len(buf) {
					rng.Read(buf)
					hash.Write(buf)
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
				select {
				case want <- [32]byte(hash.Sum(nil)):
				default:
				}
			}()
		}
	}()
	return svc.Addr().(*net.TCPAddr).Port, want
}

// labExpose starts `keytunnel [args] expose 127.0.0.1:port` on h and
// returns it with the key it announced; args should include --json.
func labExpose(t *testing.T, bin string, env []string, h *natlab.Host, port int, args ...string) (*proctest.Proc, string) {
	t.Helper()
	p := proctest.StartCmd(t, h.Command(bin, append(args, "expose", fmt.Sprintf("127.0.0.1:%d", port))...), env)
	ev := proctest.JSON(t, p.Line(`"event":"listening"`, 90*time.Second))
	pub, _ := ev["public_key"].(string)
	if len(pub) != 64 {
		t.Fatalf("expose: %v", ev)
	}
	return p, pub
}

// labForward starts `keytunnel [args] forward pub 0` on h and returns it
// with its local address; args should include --json.
func labForward(t *testing.T, bin string, env []string, h *natlab.Host, pub string, args ...string) (*proctest.Proc, netip.AddrPort) {
	t.Helper()
	p := proctest.StartCmd(t, h.Command(bin, append(args, "forward", pub, "0")...), env)
	ev := proctest.JSON(t, p.Line(`"event":"forwarding"`, 90*time.Second))
	local, err := netip.ParseAddrPort(fmt.Sprint(ev["listen"]))
	if err != nil {
		t.Fatalf("forward: %v", ev)
	}
	return p, local
}

// readChecked connects to local from h, reads until EOF and checks that
// it got size bytes whose SHA-256 the service sends on want.
func readChecked(t *testing.T, h *natlab.Host, local netip.AddrPort, size int, want chan [32]byte, deadline time.Time) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := h.DialTCP(local, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte{'g'}); err != nil {
		t.Fatal(err)
	}
	hash := sha256.New()
	n, err := io.Copy(hash, c)
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	took := time.Since(start)
	if n != int64(size) {
		t.Fatalf("got %d bytes, want %d", n, size)
	}
	select {
	case w := <-want:
		if [32]byte(hash.Sum(nil)) != w {
			t.Fatal("the data differs (SHA-256)")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the service did not finish")
	}
	return took
}

// TestNATLabRelayThrough: `keytunnel expose` and `keytunnel forward`, each
// behind its own randomizing NAT (which no holepunch gets through), reach
// each other with --relay-through the key of a `keytunnel relay` process
// on a public host, and 16 MiB arrive intact. The bytes went through the
// relay: its host's interface carried at least that much in each
// direction while the relay matched the pair (its stop log's counters),
// and `keytunnel status` names the relay as the forward's path, with the
// bytes.
func TestNATLabRelayThrough(t *testing.T) {
	natlab.Require(t)
	bin := proctest.Binary(t)
	deadline := time.Now().Add(3 * time.Minute)
	lab := natlab.New(t)
	env := append(proctest.Env(t, proctest.LabDHT(t, lab)), "XDG_RUNTIME_DIR="+t.TempDir())

	r := lab.Host(lab.Public())
	relay := proctest.StartCmd(t, r.Command(bin, "--json", "relay"), env)
	ev := proctest.JSON(t, relay.Line(`"event":"listening"`, 60*time.Second))
	relayKey, _ := ev["public_key"].(string)
	if len(relayKey) != 64 {
		t.Fatalf("relay: %v", ev)
	}

	const size = 16 << 20
	e := lab.Host(lab.NAT(natlab.Random))
	f := lab.Host(lab.NAT(natlab.Random))
	svcPort, want := sendingService(t, e, size)
	_, pub := labExpose(t, bin, env, e, svcPort, "--json", "--relay-through", relayKey)
	fw, local := labForward(t, bin, env, f, pub, "--json", "--relay-through", relayKey)

	rx0, tx0 := netDevBytes(t, relay.Pid())
	took := readChecked(t, f, local, size, want, deadline)
	rx, tx := netDevBytes(t, relay.Pid())
	t.Logf("16 MiB intact in %v (%.1f MB/s); the relay's host received %.1f MB and sent %.1f MB meanwhile",
		took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6, float64(rx-rx0)/1e6, float64(tx-tx0)/1e6)
	if rx-rx0 < size || tx-tx0 < size {
		t.Fatalf("the relay's host received %d and sent %d bytes during a %d-byte transfer: the bytes did not go through the relay", rx-rx0, tx-tx0, size)
	}
	st := processOf(t, statusJSON(t, env), fw.Pid())
	if tn := st.Tunnels[0]; len(tn.Peers) != 1 || !strings.HasPrefix(tn.Peers[0].Path, "relay "+relayKey+" (") ||
		tn.BytesReceived != size || tn.BytesSent != 1 || st.DHT == nil || st.DHT.RelayFallbacks < 1 {
		t.Fatalf("status of the forward: %+v, dht %+v", tn, st.DHT)
	}
	t.Logf("keytunnel status:\n%s", runStatus(t, env, "status"))

	relay.Stop()
	stopped := proctest.JSON(t, relayLine(t, relay, "relay stopped"))
	if m, _ := stopped["matched"].(float64); m < 1 {
		t.Fatalf("the relay matched no pair: %v", stopped)
	}
}

// relayLine returns the first stderr line of p containing sub.
func relayLine(t *testing.T, p *proctest.Proc, sub string) string {
	t.Helper()
	for _, l := range p.Err.All() {
		if strings.Contains(l, sub) {
			return l
		}
	}
	t.Fatalf("%s: no stderr line with %q:\n%s", p.Name, sub, p.Err)
	return ""
}

// netDevBytes sums the received and sent bytes of the interfaces other
// than lo in pid's network namespace (/proc/<pid>/net/dev).
func netDevBytes(t *testing.T, pid int) (rx, tx int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(l, ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			continue
		}
		r, err1 := strconv.ParseInt(f[0], 10, 64)
		s, err2 := strconv.ParseInt(f[8], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		rx += r
		tx += s
	}
	return rx, tx
}
