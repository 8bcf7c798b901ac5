package main

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/app"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestE2EStatusAndMetrics: expose and forward processes with --metrics on
// a loopback testnet; one connection moves 16 MiB up and 1 MiB + 7 bytes
// back. Midway (8 MiB written, the connection open) and at the end, both
// `keytunnel status --json` and a scrape of each process's /metrics
// report exactly those bytes, each way, with the connection, the peer
// (its key, a direct path, an RTT) and the DHT's health. A process killed
// with SIGKILL leaves a socket that status removes.
func TestE2EStatusAndMetrics(t *testing.T) {
	bs := e2eTestnet(t)
	run := t.TempDir()
	env := func() []string { return append(proctest.Env(t, bs), "XDG_RUNTIME_DIR="+run) }

	// Nothing runs yet.
	if out := runStatus(t, env(), "status"); out != "no keytunnel process is running (as this user)\n" {
		t.Fatalf("status with nothing running: %q", out)
	}
	if rep := statusJSON(t, env()); len(rep.Processes) != 0 {
		t.Fatalf("status --json with nothing running: %+v", rep)
	}

	const half, back = 8 << 20, 1<<20 + 7
	got := make(chan int64, 1)
	target := proctest.Serve(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		n, _ := io.Copy(io.Discard, c)
		if n == 0 {
			return // expose's check that the target is up
		}
		select {
		case got <- n:
		default:
		}
		io.CopyN(c, rand.Reader, back)
	})

	ex := proctest.Start(t, env(), "--json", "--metrics", "127.0.0.1:0", "expose", target)
	exposed, _ := proctest.JSON(t, ex.First(60*time.Second))["public_key"].(string)
	exMetrics := metricsURL(t, ex)
	fw := proctest.Start(t, env(), "--json", "--metrics", "127.0.0.1:0", "forward", exposed, "0")
	local, _ := proctest.JSON(t, fw.Line(`"event":"forwarding"`, 60*time.Second))["listen"].(string)
	fwMetrics := metricsURL(t, fw)

	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := io.CopyN(c, rand.Reader, half); err != nil {
		t.Fatal(err)
	}
	// Midway: the target reads everything, so every byte written so far
	// reaches both counters while the connection stays open.
	waitCounters(t, "midway", env(), exMetrics, fwMetrics, exposed, half, 0, 1)

	if _, err := io.CopyN(c, rand.Reader, half); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != back {
		t.Fatalf("read %d bytes back (%v), want %d", n, err, back)
	}
	if n := <-got; n != 2*half {
		t.Fatalf("the target got %d bytes, want %d", n, 2*half)
	}
	c.Close()
	rep := waitCounters(t, "done", env(), exMetrics, fwMetrics, exposed, 2*half, back, 0)

	// The rest of what status says.
	exSt, fwSt := processOf(t, rep, ex.Pid()), processOf(t, rep, fw.Pid())
	et, ft := exSt.Tunnels[0], fwSt.Tunnels[0]
	if exSt.Command != "expose" || et.Role != "expose" || et.Target != target || et.PublicKey != exposed ||
		fwSt.Command != "forward" || ft.Role != "forward" || ft.Listen != local || ft.Remote != exposed || ft.Redials != 0 {
		t.Fatalf("tunnels: %+v, %+v", et, ft)
	}
	if len(ft.Peers) != 1 || len(et.Peers) != 1 {
		t.Fatalf("peers: forward %+v, expose %+v", ft.Peers, et.Peers)
	}
	fp, ep := ft.Peers[0], et.Peers[0]
	if fp.PublicKey != exposed || fp.Mode != "mux" || !strings.HasPrefix(fp.Path, "direct ") || fp.RTTMillis <= 0 ||
		len(ep.PublicKey) != 64 || !strings.HasPrefix(ep.Path, "direct ") || ep.RTTMillis <= 0 {
		t.Fatalf("peers: forward %+v, expose %+v", fp, ep)
	}
	// One session, and its interactive lane unless it is still dialing.
	if d := exSt.DHT; d == nil || d.RoutingNodes == 0 || d.Requests == 0 || d.Handshakes["accepted"] < 1 || d.Handshakes["accepted"] > 2 {
		t.Fatalf("expose's dht: %+v", d)
	}
	if d := fwSt.DHT; d == nil || d.RoutingNodes == 0 || d.Dials < 1 || d.Dials > 2 || d.DialFailures != 0 {
		t.Fatalf("forward's dht: %+v", d)
	}
	m := scrape(t, exMetrics)
	for _, name := range []string{`keytunnel_dht_handshakes_total{outcome="accepted"}`, "keytunnel_dht_routing_table_nodes", "process_resident_memory_bytes", "go_goroutines"} {
		if m[name] <= 0 {
			t.Errorf("expose's metrics: %s = %v, want > 0", name, m[name])
		}
	}
	if _, ok := m[`keytunnel_dht_holepunch_attempts_total`]; !ok {
		t.Error("no holepunch metric")
	}
	text := runStatus(t, env(), "status")
	t.Logf("keytunnel status:\n%s", text)
	for _, want := range []string{"pid " + strconv.Itoa(ex.Pid()) + ": expose", "expose " + target + " as " + exposed,
		"sent 1.0 MB, received 16.8 MB", "peer " + exposed + " (mux): direct "} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q", want)
		}
	}

	// The sockets are the user's alone.
	sock := filepath.Join(run, "keytunnel", fmt.Sprintf("keytunnel-%d.sock", fw.Pid()))
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s: %v %v", sock, fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("run directory: %v %v", fi.Mode(), err)
	}
	// A process that dies without cleaning up leaves its socket, which
	// status ignores and removes.
	fw.Cmd.Process.Signal(syscall.SIGKILL)
	fw.Wait(10 * time.Second)
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the killed process's socket is gone already (%v); the test checks nothing", err)
	}
	rep = statusJSON(t, env())
	if len(rep.Processes) != 1 || rep.Processes[0].PID != ex.Pid() {
		t.Fatalf("after the forward was killed: %+v", rep)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("stale socket still there: %v", err)
	}
	// A clean exit removes the socket itself.
	ex.Stop()
	if out := runStatus(t, env(), "status"); out != "no keytunnel process is running (as this user)\n" {
		t.Fatalf("status after both ended: %q", out)
	}
}

// TestE2EMetricsAddressInUse: --metrics on a taken port fails before the
// command starts, with one line.
func TestE2EMetricsAddressInUse(t *testing.T) {
	bs := e2eTestnet(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	p := proctest.Start(t, proctest.Env(t, bs), "--metrics", taken.Addr().String(), "expose", "8080")
	want := "keytunnel: --metrics: " + taken.Addr().String() + " is already in use (another program listens there)\n"
	if code := p.Wait(20 * time.Second); code != 1 || p.Err.String() != want || p.Out.String() != "" {
		t.Fatalf("exit %d, stderr %q (want %q), stdout %q", code, p.Err.String(), want, p.Out.String())
	}
}

// waitCounters waits until status --json and both scrapes report up bytes
// from forward to expose, down bytes back and open connections, and
// returns the last status.
func waitCounters(t *testing.T, when string, env []string, exMetrics, fwMetrics, exposed string, up, down uint64, open int64) app.StatusReport {
	t.Helper()
	var last string
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(100 * time.Millisecond) {
		rep := statusJSON(t, env)
		if len(rep.Processes) != 2 || len(rep.Processes[0].Tunnels) != 1 || len(rep.Processes[1].Tunnels) != 1 {
			t.Fatalf("%s: status: %+v", when, rep)
		}
		var ok = true
		last = ""
		for _, p := range rep.Processes {
			tn := p.Tunnels[0]
			sent, recv := up, down
			url := fwMetrics
			if tn.Role == "expose" {
				sent, recv, url = down, up, exMetrics
			}
			m := scrape(t, url)
			labels := fmt.Sprintf(`{key="%s",role="%s",tunnel="%s"}`, exposed, tn.Role, tn.Name)
			ms, mr, mo, mt := m["keytunnel_tunnel_sent_bytes_total"+labels], m["keytunnel_tunnel_received_bytes_total"+labels],
				m["keytunnel_tunnel_connections_open"+labels], m["keytunnel_tunnel_connections_total"+labels]
			last += fmt.Sprintf("\n%s: status sent %d received %d open %d total %d; metrics sent %v received %v open %v total %v",
				tn.Role, tn.BytesSent, tn.BytesReceived, tn.ConnectionsOpen, tn.ConnectionsTotal, ms, mr, mo, mt)
			if tn.BytesSent != sent || tn.BytesReceived != recv || tn.ConnectionsOpen != open || tn.ConnectionsTotal != 1 ||
				ms != float64(sent) || mr != float64(recv) || mo != float64(open) || mt != 1 {
				ok = false
			}
		}
		if ok {
			t.Logf("%s:%s", when, last)
			return rep
		}
	}
	t.Fatalf("%s: want %d bytes up, %d down, %d open:%s", when, up, down, open, last)
	return app.StatusReport{}
}

func runStatus(t *testing.T, env []string, args ...string) string {
	t.Helper()
	p := proctest.Start(t, env, args...)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, p.Err)
	}
	return p.Out.String()
}

func statusJSON(t *testing.T, env []string) app.StatusReport {
	t.Helper()
	var rep app.StatusReport
	out := runStatus(t, env, "status", "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: %q: %v", out, err)
	}
	return rep
}

func processOf(t *testing.T, rep app.StatusReport, pid int) app.ProcessStatus {
	t.Helper()
	for _, p := range rep.Processes {
		if p.PID == pid && len(p.Tunnels) == 1 {
			return p
		}
	}
	t.Fatalf("no process %d with one tunnel in %+v", pid, rep)
	return app.ProcessStatus{}
}

// metricsURL is the URL p logged for --metrics; it must be on loopback.
func metricsURL(t *testing.T, p *proctest.Proc) string {
	t.Helper()
	url, _ := proctest.JSON(t, p.ErrLine("serving Prometheus metrics", 30*time.Second))["url"].(string)
	if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/metrics") {
		t.Fatalf("metrics at %q, want http://127.0.0.1:PORT/metrics", url)
	}
	return url
}

// scrape reads a Prometheus text exposition into name{labels} -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	cl := http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("%s: bad line %q", url, l)
		}
		m[l[:i]] = v
	}
	return m
}

// TestE2EStatusUpAndConnect: an `up` process lists its entries by name,
// each with its own counters, and a running `connect` is listed with its
// peer.
func TestE2EStatusUpAndConnect(t *testing.T) {
	bs := e2eTestnet(t)
	run := t.TempDir()
	env := func() []string { return append(proctest.Env(t, bs), "XDG_RUNTIME_DIR="+run) }
	echo := proctest.Echo(t)
	keyFile, kp := proctest.WriteSeed(t, "svc.key")
	port := proctest.FreeTCP(t)
	cfg := filepath.Join(t.TempDir(), "keytunnel.toml")
	toml := fmt.Sprintf("[[expose]]\nname = \"svc\"\naddress = %q\nkey = %q\n\n[[forward]]\nname = \"a\"\nkey = %q\nport = %d\n",
		echo, keyFile, kp.Public.String(), port)
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	up := proctest.Start(t, env(), "--json", "up", "-c", cfg)
	up.Line(`"entry":"a"`, 60*time.Second)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := strings.Repeat("x", 1000)
	proctest.RoundTrip(t, c, msg)

	// connect, with a stdin that stays open.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// (connect logs only warnings, so not the URL of a port 0: a port is
	// given.)
	connMetrics := fmt.Sprintf("127.0.0.1:%d", proctest.FreeTCP(t))
	cmd := exec.Command(proctest.Binary(t), "--metrics", connMetrics, "connect", kp.Public.String())
	connMetrics = "http://" + connMetrics + "/metrics"
	cmd.Stdin = r
	conn := proctest.StartCmd(t, cmd, env())
	r.Close()
	// connect counts its bytes at stdin and stdout: 6 and 100 KB + 4,
	// echoed back.
	io.WriteString(w, "hello\n")
	conn.Line("hello", 60*time.Second)
	io.WriteString(w, strings.Repeat("y", 100_000)+"end\n")
	conn.Line("yend", 60*time.Second)
	const connBytes = 6 + 100_004

	var last app.StatusReport
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		last = statusJSON(t, env())
		var ok bool
		if len(last.Processes) == 2 {
			u, cn := processOf2(last, up.Pid()), processOf2(last, conn.Pid())
			ok = u != nil && cn != nil && u.Command == "up" && len(u.Tunnels) == 2 && cn.Command == "connect" && len(cn.Tunnels) == 1
			if ok {
				byName := map[string]app.TunnelStatus{}
				for _, tn := range u.Tunnels {
					byName[tn.Name] = tn
				}
				svc, a, ct := byName["svc"], byName["a"], cn.Tunnels[0]
				ok = svc.Role == "expose" && svc.PublicKey == kp.Public.String() && svc.Target == echo &&
					svc.BytesReceived == 1000+connBytes && svc.BytesSent == 1000+connBytes && svc.ConnectionsTotal == 2 && len(svc.Peers) == 2 &&
					a.Role == "forward" && a.Remote == kp.Public.String() && a.BytesSent == 1000 && a.BytesReceived == 1000 &&
					a.ConnectionsOpen == 1 && len(a.Peers) == 1 &&
					ct.Role == "connect" && ct.Remote == kp.Public.String() && ct.BytesSent == connBytes && ct.BytesReceived == connBytes &&
					ct.ConnectionsOpen == 1 && ct.ConnectionsTotal == 1
			}
		}
		if ok {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("status: %+v", last)
		}
	}
	m := scrape(t, connMetrics)
	labels := fmt.Sprintf(`{key="%s",role="connect",tunnel="stdio"}`, kp.Public)
	if m["keytunnel_tunnel_sent_bytes_total"+labels] != connBytes || m["keytunnel_tunnel_received_bytes_total"+labels] != connBytes ||
		m["keytunnel_tunnel_connections_open"+labels] != 1 || m["keytunnel_tunnel_connections_total"+labels] != 1 {
		t.Fatalf("connect's metrics: %v", m)
	}
	t.Logf("keytunnel status:\n%s", runStatus(t, env(), "status"))
}

func processOf2(rep app.StatusReport, pid int) *app.ProcessStatus {
	for i := range rep.Processes {
		if rep.Processes[i].PID == pid {
			return &rep.Processes[i]
		}
	}
	return nil
}

// TestE2EStatusPathThroughDHTRelay: a forward that reaches the DHT
// through a dht-relay names the relay as its peer's path, and reports no
// DHT node of its own (the relay's is not its to report).
func TestE2EStatusPathThroughDHTRelay(t *testing.T) {
	bs := e2eTestnet(t)
	run := t.TempDir()
	env := func() []string { return append(proctest.Env(t, bs), "XDG_RUNTIME_DIR="+run) }
	relay := proctest.Start(t, proctest.Env(t, bs), "--json", "dht-relay", "--host", "127.0.0.1", "--port", strconv.Itoa(proctest.FreeTCP(t)))
	url := proctest.JSON(t, relay.Line(`"event":"dht-relay"`, 60*time.Second))["address"].(string)
	_, pub := proctest.Expose(t, bs, proctest.Echo(t))
	fw := proctest.Start(t, env(), "--relay", url, "--json", "forward", pub, "0")
	local, _ := proctest.JSON(t, fw.Line(`"event":"forwarding"`, 60*time.Second))["listen"].(string)
	proctest.EchoOnce(t, local, "through a dht-relay")
	rep := statusJSON(t, env())
	p := processOf(t, rep, fw.Pid())
	tn := p.Tunnels[0]
	if len(tn.Peers) != 1 || tn.Peers[0].Path != "dht-relay "+url || tn.Peers[0].PublicKey != pub || p.DHT != nil {
		t.Fatalf("forward through %s: %+v, dht %+v", url, tn, p.DHT)
	}
	t.Logf("keytunnel status:\n%s", runStatus(t, env(), "status"))
}

// TestE2EStatusNode: a `keytunnel node` is listed with its DHT's health,
// and its metrics show its routing table.
func TestE2EStatusNode(t *testing.T) {
	bs := e2eTestnet(t)
	env := append(proctest.Env(t, bs), "XDG_RUNTIME_DIR="+t.TempDir())
	node := proctest.Start(t, env, "--bootstrap", bs, "--json", "--metrics", "127.0.0.1:0", "node")
	node.First(60 * time.Second)
	url := metricsURL(t, node)
	rep := statusJSON(t, env)
	if len(rep.Processes) != 1 || rep.Processes[0].Command != "node" || len(rep.Processes[0].Tunnels) != 0 ||
		rep.Processes[0].DHT == nil || rep.Processes[0].DHT.RoutingNodes == 0 {
		t.Fatalf("status: %+v", rep)
	}
	if m := scrape(t, url); m["keytunnel_dht_routing_table_nodes"] == 0 || m["keytunnel_dht_requests_total"] == 0 {
		t.Fatalf("node's metrics: %v", m)
	}
}

// TestE2EStatusServers: testnet, relay and dht-relay processes are listed
// by status with what they serve, their counters and their DHT node's
// health, and serve them as metrics: the testnet's nodes, the relay's
// key and pair counters, the dht-relay's URL and its one client.
func TestE2EStatusServers(t *testing.T) {
	run := t.TempDir()
	env := func() []string { return append(proctest.Env(t, ""), "XDG_RUNTIME_DIR="+run) }
	tn := proctest.Start(t, env(), "--json", "--metrics", "127.0.0.1:0", "testnet", "--nodes", "3")
	bs := proctest.JSON(t, tn.Line(`"event":"testnet"`, 60*time.Second))["bootstrap"].(string)
	tnMetrics := metricsURL(t, tn)
	withBS := func() []string { return append(env(), "KEYTUNNEL_BOOTSTRAP="+bs) }
	rl := proctest.Start(t, withBS(), "--json", "--metrics", "127.0.0.1:0", "relay")
	relayKey := proctest.JSON(t, rl.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string)
	rlMetrics := metricsURL(t, rl)
	dr := proctest.Start(t, withBS(), "--json", "--metrics", "127.0.0.1:0", "dht-relay", "--host", "127.0.0.1", "--port", strconv.Itoa(proctest.FreeTCP(t)))
	url := proctest.JSON(t, dr.Line(`"event":"dht-relay"`, 60*time.Second))["address"].(string)
	drMetrics := metricsURL(t, dr)
	// One client of the dht-relay (in its own run directory: only the
	// servers are listed).
	_, pub := proctest.Expose(t, bs, proctest.Echo(t))
	fw := proctest.Start(t, append(proctest.Env(t, bs), "XDG_RUNTIME_DIR="+t.TempDir()), "--relay", url, "--json", "forward", pub, "0")
	local, _ := proctest.JSON(t, fw.Line(`"event":"forwarding"`, 60*time.Second))["listen"].(string)
	proctest.EchoOnce(t, local, "through a dht-relay")

	rep := statusJSON(t, env())
	want := map[int]struct{ role, key, listen, counter string }{
		tn.Pid(): {"testnet", "", bs, "nodes"},
		rl.Pid(): {"relay", relayKey, "", "pair_requests"},
		dr.Pid(): {"dht-relay", "", url, "clients"},
	}
	if len(rep.Processes) != 3 {
		t.Fatalf("status: %+v", rep)
	}
	for _, p := range rep.Processes {
		w, s := want[p.PID], p.Server
		if s == nil || p.Command != w.role || s.Role != w.role || s.PublicKey != w.key || s.Listen != w.listen ||
			len(p.Tunnels) != 0 || p.DHT == nil || p.DHT.RoutingNodes == 0 || s.Since.IsZero() {
			t.Fatalf("process %d, want %+v: %+v, server %+v, dht %+v", p.PID, w, p, s, p.DHT)
		}
		if _, ok := s.Counters[w.counter]; !ok {
			t.Fatalf("%s: no counter %s in %v", w.role, w.counter, s.Counters)
		}
	}
	if p := processOf2(rep, tn.Pid()); p.Server.Counters["nodes"] != 3 {
		t.Fatalf("testnet: %v", p.Server.Counters)
	}
	if p := processOf2(rep, dr.Pid()); p.Server.Counters["clients"] != 1 {
		t.Fatalf("dht-relay: %v", p.Server.Counters)
	}
	for u, want := range map[string]map[string]float64{
		tnMetrics: {"keytunnel_testnet_nodes": 3},
		rlMetrics: {"keytunnel_blind_relay_sessions": -1, "keytunnel_blind_relay_pairs_matched_total": 0, "keytunnel_blind_relay_pair_requests_refused_total": 0},
		drMetrics: {"keytunnel_dht_relay_clients": 1},
	} {
		m := scrape(t, u)
		for name, v := range want {
			got, ok := m[name]
			if !ok || (v >= 0 && got != v) || m["keytunnel_dht_routing_table_nodes"] == 0 {
				t.Fatalf("%s: %s = %v (%v), want %v; routing table %v", u, name, got, ok, v, m["keytunnel_dht_routing_table_nodes"])
			}
		}
	}
	t.Logf("keytunnel status:\n%s", runStatus(t, env(), "status"))
}
