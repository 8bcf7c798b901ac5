//go:build linux

package udx

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
	"golang.org/x/sys/unix"
)

// requireRoot skips outside CI and fails in CI when the test cannot run.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = tool + " not found"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("cannot run in CI: %s", why)
	}
	t.Skipf("skipped outside CI: %s", why)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// inNetns runs fn on an OS thread that has entered the network namespace
// ns. Sockets created and processes started there live in ns. The thread is
// never unlocked, so it is discarded rather than reused outside ns.
func inNetns(t *testing.T, ns string, fn func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		fn()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestNetnsRandomLoss: Go↔Node in a private network namespace whose
// loopback drops 2 % of packets at random (iptables statistic match).
func TestNetnsRandomLoss(t *testing.T) {
	requireRoot(t, "ip", "iptables")
	nodetest.Require(t)
	ns := fmt.Sprintf("kt-udx-%d", os.Getpid())
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-i", "lo", "-p", "udp",
		"-m", "statistic", "--mode", "random", "--probability", "0.02", "-j", "DROP")

	for _, open := range []string{"go", "node"} {
		t.Run("open="+open, func(t *testing.T) {
			const n = 32 << 20
			var p *nodetest.Proc
			var pc *net.UDPConn
			inNetns(t, ns, func() {
				p = nodetest.Start(t, "udx-peer.js", "--mode", "transfer", "--open", open, "--size", fmt.Sprint(n))
				var err error
				pc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Error(err)
				}
			})
			if pc == nil {
				t.FailNow()
			}
			sock, err := NewSocket(pc)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sock.Close() })
			f := p.Expect("ready ", 20*time.Second)
			var port int
			var nid uint32
			fmt.Sscanf(f, "%d %d", &port, &nid)
			naddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
			before := lossDrops(t, ns)
			interopTransfer(t, p, sock, naddr, nid, open, n, 120*time.Second)
			// 32 MiB is over 22,000 data packets: 2 % of them alone is
			// about 450 drops, so under 100 means the rule did not bite.
			drops := lossDrops(t, ns) - before
			t.Logf("the loss rule dropped %d packets", drops)
			if drops < 100 {
				t.Fatalf("the loss rule dropped %d packets during a %d-byte transfer, want at least 100", drops, n)
			}
		})
	}
}

// lossDrops reads the packet counter of the DROP rule in ns's INPUT chain.
func lossDrops(t *testing.T, ns string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "iptables", "-L", "INPUT", "-v", "-n", "-x").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -L: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[2] == "DROP" && strings.Contains(l, "statistic") {
			n, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatalf("iptables counter %q: %v", f[0], err)
			}
			return n
		}
	}
	t.Fatalf("no DROP rule in %s's INPUT chain:\n%s", ns, out)
	return 0
}
