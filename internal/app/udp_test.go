package app

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// udpEcho answers each datagram with "echo:" and the datagram.
func udpEcho(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestUpUDPEntries: `up` serves a udp = true expose and forward, next to
// a TCP forward on the same port number.
func TestUpUDPEntries(t *testing.T) {
	fn := newFakeNet(t)
	dir := t.TempDir()
	_, kp := writeKey(t, dir, "dns.key")
	svc := udpEcho(t)
	tcpEcho := echoServer(t)
	_, kp2 := writeKey(t, dir, "tcp.key")
	port := freePort(t)
	cfg := filepath.Join(dir, "keytunnel.toml")
	writeFile(t, cfg, fmt.Sprintf(`
[[expose]]
name = "dns"
address = %q
key = "dns.key"
udp = true
udp_idle_timeout = "5s"

[[expose]]
name = "tcp"
address = %q
key = "tcp.key"

[[forward]]
name = "dns-here"
key = %q
port = %d
udp = true
max_flows = 4

[[forward]]
name = "tcp-here"
key = %q
port = %d
`, svc.LocalAddr(), tcpEcho, kp.Public, port, kp2.Public, port))
	env, out, _ := testEnv(t, fn)
	env.JSON = true
	env.Reload = make(chan struct{})
	stop, _ := run(t, func(ctx context.Context) error { return Up(ctx, env, UpOptions{ConfigFile: cfg}) })
	for _, name := range []string{"dns", "tcp", "dns-here", "tcp-here"} {
		out.waitLine(t, `"entry":"`+name+`"`, 10*time.Second)
	}
	if l := out.waitLine(t, `"entry":"dns-here"`, time.Second); !strings.Contains(l, `"udp":true`) {
		t.Errorf("forwarding event without udp: %s", l)
	}
	c, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	got := ""
	for try := 0; try < 20 && got == ""; try++ {
		c.Write([]byte("query"))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			got = string(buf[:n])
		}
	}
	if got != "echo:query" {
		t.Fatalf("through the UDP forward: %q", got)
	}
	tc := dialPort(t, port)
	roundTrip(t, tc, "tcp on the same port number")
	tc.Close()
	// The status registry lists the UDP entries as such, flows counted
	// as their connections.
	ps := env.reg.snapshot(context.Background())
	byName := map[string]TunnelStatus{}
	for _, tn := range ps.Tunnels {
		byName[tn.Name] = tn
	}
	for name, want := range map[string]struct {
		role string
		udp  bool
	}{"dns": {"expose", true}, "dns-here": {"forward", true}, "tcp": {"expose", false}, "tcp-here": {"forward", false}} {
		tn, ok := byName[name]
		if !ok || tn.Role != want.role || tn.UDP != want.udp {
			t.Errorf("status of %s: %+v (present %v), want role %s, udp %v", name, tn, ok, want.role, want.udp)
		}
	}
	if tn := byName["dns-here"]; tn.ConnectionsTotal < 1 || tn.BytesReceived < uint64(len("echo:query")) || len(tn.Peers) != 1 {
		t.Errorf("UDP forward's counters: %+v", tn)
	}
	var text strings.Builder
	writeStatus(&text, StatusReport{Processes: []ProcessStatus{ps}}, time.Now())
	if !strings.Contains(text.String(), "dns-here: forward udp 127.0.0.1:") || !strings.Contains(text.String(), "flows 1 open") {
		t.Errorf("status text:\n%s", text.String())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
