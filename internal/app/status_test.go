package app

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/relay/blindrelay"
	"github.com/keytunnel/keytunnel/tunnel"
)

// The control socket answers status requests with what the registry
// holds, refuses other requests with an error object, and Status prints
// it, skipping and removing the socket of a process that is gone.
func TestControlSocketAndStatus(t *testing.T) {
	env, out, _ := testEnv(t, nil)
	env.init()
	env.reg.setCommand("forward")
	peer, _ := key.Generate(nil)
	since := time.Now().Add(-time.Minute)
	remove := env.reg.add(&regTunnel{name: "db", role: "forward", remote: peer.Public.String(), local: "127.0.0.1:5433",
		stats: func() tunnel.Stats {
			return tunnel.Stats{Since: since, BytesSent: 1234, BytesReceived: 5_600_000, ConnsOpen: 2, ConnsTotal: 9, Redials: 3,
				Peers: []tunnel.PeerStats{{Remote: peer.Public, Mode: "mux", Since: since, RTT: 1500 * time.Microsecond, Path: "relay KEY (1.2.3.4:5)"}}}
		}})
	defer remove()
	stop := env.startControl(false)
	defer stop()
	sock := filepath.Join(env.RunDir, "keytunnel-"+strconv.Itoa(os.Getpid())+".sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %s: %v, %v", sock, fi, err)
	}

	ps, err := queryProcess(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if ps.PID != os.Getpid() || ps.Command != "forward" || len(ps.Tunnels) != 1 {
		t.Fatalf("answer %+v", ps)
	}
	tn := ps.Tunnels[0]
	if tn.Name != "db" || tn.Listen != "127.0.0.1:5433" || tn.BytesSent != 1234 || tn.BytesReceived != 5_600_000 ||
		tn.ConnectionsOpen != 2 || tn.ConnectionsTotal != 9 || tn.Redials != 3 || len(tn.Peers) != 1 ||
		tn.Peers[0].RTTMillis != 1.5 || tn.Peers[0].Path != "relay KEY (1.2.3.4:5)" || tn.Peers[0].PublicKey != peer.Public.String() {
		t.Fatalf("tunnel %+v", tn)
	}

	// Bad and unknown requests get an error, and the server goes on.
	for req, want := range map[string]string{"nonsense\n": `{"error":"bad request: `, `{"get":"secrets"}` + "\n": `{"error":"unknown request \"secrets\""}`} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(req))
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		c.Close()
		if !strings.HasPrefix(string(b[:n]), want) {
			t.Fatalf("%q: answer %q, want %q...", req, b[:n], want)
		}
	}

	// A socket left behind by a process that is gone.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(env.RunDir, "keytunnel-"+strconv.Itoa(dead.Process.Pid)+".sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	if err := Status(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !strings.HasPrefix(text, "pid "+strconv.Itoa(os.Getpid())+": forward, running for ") {
		t.Errorf("status begins %q", text)
	}
	for _, want := range []string{"  db: forward 127.0.0.1:5433 to " + peer.Public.String(),
		"    sent 1.2 KB, received 5.6 MB; connections 2 open, 9 total; redials 3; since 1m0s",
		"    peer " + peer.Public.String() + " (mux): relay KEY (1.2.3.4:5), rtt 1.5 ms, up 1m0s"} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale socket: %v", err)
	}
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket after stop: %v", err)
	}
}

// Every counter a relay, dht-relay or testnet reports has its metric, and
// a scrape carries them with their values, as status does.
func TestServerCountersHaveMetrics(t *testing.T) {
	for role, cs := range map[string][]serverCounter{
		"relay":     blindRelayCounters(blindrelay.Stats{Sessions: 1, Pending: 2, Active: 3, Requested: 4, Matched: 5, Cancelled: 6, Expired: 7, Refused: 8, Ignored: 9, Idle: 10, SessionsRefused: 11, Silent: 12}),
		"dht-relay": dhtRelayCounters(11),
		"testnet":   testnetCounters(12),
	} {
		if len(cs) != len(serverMetrics[role]) {
			t.Errorf("%s: %d counters, %d metrics", role, len(cs), len(serverMetrics[role]))
		}
		var reg registry
		reg.setCommand(role)
		reg.setServer(&regServer{role: role, since: time.Now(), counters: func() []serverCounter { return cs }})
		ps := reg.snapshot(context.Background())
		pr := prometheus.NewPedanticRegistry()
		pr.MustRegister(collector{&reg})
		mfs, err := pr.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		for _, c := range cs {
			m, ok := serverMetrics[role][c.name]
			if !ok {
				t.Errorf("%s: counter %s has no metric", role, c.name)
				continue
			}
			name := m.desc.String()
			name = name[strings.Index(name, `"`)+1:]
			name = name[:strings.Index(name, `"`)]
			if got[name] != float64(c.value) || ps.Server.Counters[c.name] != c.value {
				t.Errorf("%s: %s = %v in the scrape, %d in status; want %d", role, name, got[name], ps.Server.Counters[c.name], c.value)
			}
		}
	}
}

// connect's stdio counts what it reads from stdin (sent) and writes to
// stdout (received), and still half-closes stdout.
func TestStdioCounts(t *testing.T) {
	var out closeBuffer
	c := &stdioCounter{}
	rw := stdio(strings.NewReader("hello"), &out, c)
	b := make([]byte, 64)
	n, _ := rw.Read(b)
	rw.Write([]byte("world, and more"))
	rw.(interface{ CloseWrite() error }).CloseWrite()
	if s := c.stats(); n != 5 || s.BytesSent != 5 || s.BytesReceived != 15 || s.ConnsTotal != 1 || !out.closed || out.String() != "world, and more" {
		t.Fatalf("read %d; stats %+v; closed %v, out %q", n, s, out.closed, out.String())
	}
}

type closeBuffer struct {
	strings.Builder
	closed bool
}

func (c *closeBuffer) Close() error { c.closed = true; return nil }
