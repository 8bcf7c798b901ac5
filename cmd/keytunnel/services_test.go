package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// refusedConn connects to a forward's port and checks that the
// connection ends without a byte of any service.
func refusedConn(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		// The refusal needs nothing from the client, so its reset may
		// beat the dialer's check of the connect.
		if !strings.Contains(err.Error(), "reset") {
			t.Fatal(err)
		}
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && strings.Contains(err.Error(), "timeout")) {
		t.Fatalf("refused connection: got %q, %v", b, err)
	}
}

// unquote undoes the JSON log's escaping of the quotes in a message.
func unquote(s string) string { return strings.ReplaceAll(s, `\"`, `"`) }

// TestExposeServices drives issue #15's services with processes on a
// testnet: one expose serves a default target and two named ones, ssh
// for one key only. forward KEY reaches the default, KEY/web and KEY/ssh
// theirs; a stranger's KEY/ssh and anyone's KEY/db are refused with one
// log line saying why, and the connection closes.
func TestExposeServices(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	dflt, web, ssh := named(t, "default"), named(t, "web"), named(t, "ssh")
	friendFile, friend := proctest.WriteSeed(t, "friend.key")

	_, pub := proctest.Expose(t, bs, dflt, "--service", "web="+web, "--service", "ssh="+ssh, "--allow", "ssh="+friend.Public.String())
	_, addr := proctest.Forward(t, bs, pub)
	reach(t, addr, "default", 30*time.Second)
	_, addr = proctest.Forward(t, bs, pub+"/web")
	reach(t, addr, "web", 30*time.Second)
	_, addr = proctest.Forward(t, bs, pub+"/ssh", "--key", friendFile)
	reach(t, addr, "ssh", 30*time.Second)

	for _, tc := range []struct{ service, want string }{
		{"ssh", `is not in the allow list of service "ssh"`},
		{"db", `no service "db" behind this key (it serves: web, ssh)`},
	} {
		fw, addr := proctest.Forward(t, bs, pub+"/"+tc.service)
		refusedConn(t, addr)
		line := unquote(fw.ErrLine("connection refused by the peer", 30*time.Second))
		if !strings.Contains(line, tc.want) {
			t.Errorf("forward to %s logged %q, want %q", tc.service, line, tc.want)
		}
		if n := fw.Err.Count("connection refused by the peer"); n != 1 {
			t.Errorf("forward to %s: %d refusal lines, want 1", tc.service, n)
		}
	}
	// The stranger still reaches the open services.
	_, addr = proctest.Forward(t, bs, pub+"/web")
	reach(t, addr, "web", 30*time.Second)

	// connect KEY/NAME, and ssh user@KEY/NAME through it: OpenSSH passes
	// the host, service and all, to ProxyCommand's connect %h.
	c := proctest.Start(t, proctest.Env(t, bs), "connect", pub+"/web")
	if code := c.Wait(60 * time.Second); code != 0 || c.Out.String() != "web\n" {
		t.Errorf("connect KEY/web: exit %d, stdout %q", code, c.Out.String())
	}
	banner := proctest.Serve(t, func(c net.Conn) {
		c.Write([]byte("SSH-2.0-svctest_ssh\r\n"))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
	})
	proctest.Tool(t, "ssh", "apt-get install openssh-client")
	_, pub2 := proctest.Expose(t, bs, dflt, "--service", "ssh="+banner)
	sh := proctest.Start(t, proctest.Env(t, bs), "ssh", "-v", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "user@"+pub2+"/ssh", "true")
	sh.ErrLine("remote software version svctest_ssh", 60*time.Second)
}

// TestExposeServicesOutput: without a positional target the first
// service is the default; the listening event and the text output list
// each service and how to reach it; bad forms fail with one line.
func TestExposeServicesOutput(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	web := named(t, "web")
	dns := proctest.ServeUDP(t, func(p []byte, _ netip.AddrPort) []byte { return p })
	_, dnsPort, _ := net.SplitHostPort(dns.LocalAddr().String())

	p := proctest.Start(t, proctest.Env(t, bs), "--json", "expose", "--service", "web="+web, "--service", "dns=udp:"+dnsPort)
	ev := proctest.JSON(t, p.Line(`"event":"listening"`, 60*time.Second))
	pub := ev["public_key"].(string)
	svcs, _ := ev["services"].([]any)
	if len(svcs) != 2 {
		t.Fatalf("listening event's services: %v", ev["services"])
	}
	first, second := svcs[0].(map[string]any), svcs[1].(map[string]any)
	if first["name"] != "web" || first["default"] != true || first["forward"] != "keytunnel forward "+pub+"/web" {
		t.Errorf("first service: %v", first)
	}
	if second["name"] != "dns" || second["udp"] != true || second["target"] != "127.0.0.1:"+dnsPort || second["forward"] != "keytunnel forward --udp "+pub+"/dns" {
		t.Errorf("second service: %v", second)
	}
	_, addr := proctest.Forward(t, bs, pub)
	reach(t, addr, "web", 30*time.Second)
	fw := proctest.Start(t, proctest.Env(t, bs), "--json", "forward", "--udp", pub+"/dns", "0")
	fwEv := proctest.JSON(t, fw.Line(`"event":"forwarding"`, 60*time.Second))
	if fwEv["service"] != "dns" {
		t.Errorf("forwarding event: %v", fwEv)
	}
	c := proctest.DialUDP(t, fwEv["listen"].(string))
	got := ""
	buf := make([]byte, 100)
	for deadline := time.Now().Add(30 * time.Second); got != "q" && time.Now().Before(deadline); {
		c.Write([]byte("q"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			got = string(buf[:n])
		}
	}
	if got != "q" {
		t.Errorf("UDP service through KEY/dns: got %q", got)
	}
	p.Stop()

	text := proctest.Start(t, proctest.Env(t, bs), "expose", "--service", "web="+web, "--service", "dns=udp:"+dnsPort)
	key := strings.TrimSpace(text.First(60 * time.Second))
	for _, want := range []string{
		"service web (default): " + web + "; reach it with: keytunnel forward " + key + "/web",
		"service dns: udp:127.0.0.1:" + dnsPort + "; reach it with: keytunnel forward --udp " + key + "/dns",
	} {
		text.Line(want, 10*time.Second)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--service", "Web=80"}, `keytunnel: --service "Web=80": name "Web" may hold only a-z, 0-9, '-', '_' and '.'`},
		{[]string{"--service", "web=80", "--service", "web=81"}, `keytunnel: --service: service "web" named twice`},
		{[]string{"--service", "web"}, `keytunnel: --service "web": want NAME=TARGET (TARGET: PORT, HOST:PORT, unix:PATH or udp:PORT)`},
		{[]string{"--service", "web=80", "--allow", "db=" + key}, `keytunnel: --allow db=…: no --service named "db"`},
		{[]string{"--allow", key}, `keytunnel: expose: wrong number of arguments`},
	} {
		p := proctest.Start(t, proctest.Env(t, bs), append([]string{"expose"}, tc.args...)...)
		if code := p.Wait(30 * time.Second); code != 1 {
			t.Errorf("%v: exit %d, want 1", tc.args, code)
		}
		if got := p.Err.String(); !strings.HasPrefix(got, tc.want) || strings.Count(got, "\n") != 1 {
			t.Errorf("%v: stderr %q, want one line starting %q", tc.args, got, tc.want)
		}
	}
	for _, cmd := range []string{"forward", "connect", "doctor"} {
		bad := proctest.Start(t, proctest.Env(t, bs), cmd, key+"/No")
		if code := bad.Wait(30 * time.Second); code != 1 || strings.Count(bad.Err.String(), "\n") != 1 || !strings.Contains(bad.Err.String(), "names a service") {
			t.Errorf("%s KEY/No: exit %d, stderr %q", cmd, code, bad.Err.String())
		}
	}
}

// TestUpServices: `up` serves an [[expose]] entry's services tables, and
// its [[forward]] entries reach a service by name (service = "ssh") or
// the default; a bad service fails the file with its line.
func TestUpServices(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	dir := t.TempDir()
	web, ssh := named(t, "web"), named(t, "ssh")
	svcFile, svc := proctest.WriteSeed(t, "svc.key")
	friendFile, friend := proctest.WriteSeed(t, "friend.key")
	pub := svc.Public.String()

	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte(fmt.Sprintf("[[expose]]\nkey = %q\n\n[expose.services.Web]\naddress = %q\ndefault = true\n", svcFile, web)), 0o600)
	p := proctest.Start(t, proctest.Env(t, bs), "up", "-c", bad)
	if code := p.Wait(20 * time.Second); code != 1 || !strings.HasPrefix(p.Err.String(), "keytunnel: "+bad+":4: expose[0].services.Web: ") {
		t.Fatalf("bad service name: exit %d, stderr %q", code, p.Err.String())
	}

	exp := filepath.Join(dir, "expose.toml")
	os.WriteFile(exp, []byte(fmt.Sprintf(`[[expose]]
name = "host"
key = %q

[expose.services.web]
address = %q
default = true

[expose.services.ssh]
address = %q
allow = [%q]
`, svcFile, web, ssh, friend.Public)), 0o600)
	ex := proctest.Start(t, proctest.Env(t, bs), "--json", "up", "-c", exp)
	ev := proctest.JSON(t, ex.Line(`"event":"listening"`, 60*time.Second))
	if svcs, _ := ev["services"].([]any); len(svcs) != 2 || ev["public_key"] != pub {
		t.Fatalf("listening: %v", ev)
	}

	pd, pw, ps := proctest.FreeTCP(t), proctest.FreeTCP(t), proctest.FreeTCP(t)
	fwd := filepath.Join(dir, "forward.toml")
	os.WriteFile(fwd, []byte(fmt.Sprintf(`[[forward]]
name = "default"
key = %q
port = %d

[[forward]]
name = "web"
key = %q
service = "web"
port = %d

[[forward]]
name = "ssh"
key = %q
service = "ssh"
port = %d
`, pub, pd, pub, pw, pub, ps)), 0o600)
	env := append(proctest.Env(t, bs), "XDG_RUNTIME_DIR="+t.TempDir())
	fw := proctest.Start(t, env, "up", "--key", friendFile, "-c", fwd)
	fw.Line("ssh: forwarding 127.0.0.1:"+fmt.Sprint(ps)+" to "+pub+"/ssh", 30*time.Second)
	reach(t, fmt.Sprintf("127.0.0.1:%d", pd), "web", 30*time.Second)
	reach(t, fmt.Sprintf("127.0.0.1:%d", pw), "web", 30*time.Second)
	reach(t, fmt.Sprintf("127.0.0.1:%d", ps), "ssh", 30*time.Second)
	// status names the service of each forward.
	out := runStatus(t, env, "status")
	for _, want := range []string{
		fmt.Sprintf("ssh: forward 127.0.0.1:%d to %s/ssh\n", ps, pub),
		fmt.Sprintf("default: forward 127.0.0.1:%d to %s\n", pd, pub),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
