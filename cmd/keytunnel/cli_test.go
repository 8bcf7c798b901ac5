package main

import (
	"fmt"
	"github.com/keytunnel/keytunnel/internal/proctest"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTestnetAndNodeProcesses: `keytunnel testnet` prints a bootstrap a
// node can join through, and `keytunnel node --port P` joins it and can
// bootstrap others in turn.
func TestTestnetAndNodeProcesses(t *testing.T) {
	port := freeUDP(t)
	tn := proctest.Start(t, proctest.Env(t, ""), "testnet", "--nodes", "3", "--port", strconv.Itoa(port))
	bs := tn.First(30 * time.Second)
	if bs != "127.0.0.1:"+strconv.Itoa(port) {
		t.Fatalf("testnet printed %q, want 127.0.0.1:%d", bs, port)
	}
	joinable(t, bs)

	nport := freeUDP(t)
	nd := proctest.Start(t, proctest.Env(t, bs), "--json", "node", "--port", strconv.Itoa(nport))
	ev := proctest.JSON(t, nd.First(30*time.Second))
	if ev["event"] != "node" || !strings.HasSuffix(ev["bootstrap"].(string), ":"+strconv.Itoa(nport)) {
		t.Fatalf("node event %v", ev)
	}
	joinable(t, "127.0.0.1:"+strconv.Itoa(nport))

	// A second testnet on the same port: one line, exit 1.
	again := proctest.Start(t, proctest.Env(t, ""), "testnet", "--port", strconv.Itoa(port))
	if code := again.Wait(20 * time.Second); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if got := again.Err.String(); got != fmt.Sprintf("keytunnel: UDP port %d is already in use\n", port) {
		t.Fatalf("stderr %q", got)
	}

	// SIGTERM ends both cleanly.
	nd.Stop()
	tn.Stop()
	if code := nd.Wait(time.Second); code != 0 {
		t.Fatalf("node exit %d", code)
	}
	if code := tn.Wait(time.Second); code != 0 {
		t.Fatalf("testnet exit %d", code)
	}
}

// TestErrorsAreOneLine: bad input ends the process with exit status 1 and
// one line on stderr, before it touches the network.
func TestErrorsAreOneLine(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n"), 0o600)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	good, kp := proctest.WriteSeed(t, "good.key")
	_ = good
	// An address nothing answers at: these commands must fail before they
	// would use it.
	bs := "127.0.0.1:9"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"expose", "--key", bad, "8080"}, "keytunnel: --key " + bad + ": not a seed file (want 64 hex characters or 32 bytes)"},
		{[]string{"expose", "--seed", "123", "8080"}, "keytunnel: --seed: not a seed (want 64 hex characters)"},
		{[]string{"expose", "--key", good, "--seed", strings.Repeat("00", 32), "8080"}, "keytunnel: give --key or --seed, not both"},
		{[]string{"expose", "http"}, `keytunnel: target "http": want PORT, HOST:PORT or unix:PATH`},
		{[]string{"expose", "8080", "--key", good}, "keytunnel: expose: options go before the arguments (usage: keytunnel expose PORT|HOST:PORT|unix:PATH)"},
		{[]string{"forward", "not-a-key", "9000"}, `keytunnel: "not-a-key" is not a public key (want 64 hex or 52 z-base-32 characters) or holesail connection string (hs://…)`},
		{[]string{"forward", kp.Public.String(), taken.Addr().String()}, "keytunnel: " + taken.Addr().String() + " is already in use (another program listens there)"},
		{[]string{"connect", "xyz"}, `keytunnel: "xyz" is not a public key (want 64 hex or 52 z-base-32 characters) or holesail connection string (hs://…)`},
		{[]string{"--log-level", "loud", "node"}, `keytunnel: --log-level "loud": want debug, info, warn or error`},
	} {
		p := proctest.Start(t, proctest.Env(t, bs), tc.args...)
		code := p.Wait(20 * time.Second)
		if code != 1 || p.Err.String() != tc.want+"\n" || p.Out.String() != "" {
			t.Errorf("%v: exit %d\nstderr %q\nwant   %q\nstdout %q", tc.args, code, p.Err.String(), tc.want+"\n", p.Out.String())
		}
	}
	// With --json the error is also an event on stdout.
	p := proctest.Start(t, proctest.Env(t, bs), "--json", "forward", "nope")
	if code := p.Wait(20 * time.Second); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if ev := proctest.JSON(t, p.Out.All()[0]); ev["event"] != "error" || !strings.Contains(ev["error"].(string), "not a public key") {
		t.Fatalf("event %v", ev)
	}
}

// TestUpProcess: `up` refuses an invalid file with file:line errors, a
// SIGHUP applies an edited file (an added forward opens, a removed one
// closes), and an invalid edit changes nothing. That unchanged entries keep
// their connections is TestE2EUp's.
func TestUpProcess(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "keytunnel.toml")
	_, svc := proctest.WriteSeed(t, "svc.key")
	pa, pb := proctest.FreeTCP(t), proctest.FreeTCP(t)

	os.WriteFile(cfg, []byte(fmt.Sprintf("[[forward]]\nname = \"a\"\nkey = %q\nport = %d\n\n[[forward]]\nname = \"b\"\nkey = \"short\"\nport = %d\n", svc.Public, pa, pb)), 0o600)
	p := proctest.Start(t, proctest.Env(t, bs), "up", "-c", cfg)
	if code := p.Wait(20 * time.Second); code != 1 {
		t.Fatalf("invalid config: exit %d", code)
	}
	if want := "keytunnel: " + cfg + ":8: forward[1].key: "; !strings.HasPrefix(p.Err.String(), want) {
		t.Fatalf("stderr %q, want prefix %q", p.Err.String(), want)
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", pa)); err == nil {
		c.Close()
		t.Fatal("the valid entry of an invalid file was started")
	}

	write := func(ports map[string]int) {
		var b strings.Builder
		for name, port := range ports {
			fmt.Fprintf(&b, "[[forward]]\nname = %q\nkey = %q\nport = %d\n\n", name, svc.Public, port)
		}
		if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(map[string]int{"a": pa})
	p = proctest.Start(t, proctest.Env(t, bs), "--json", "up", "-c", cfg)
	p.Line(`"entry":"a"`, 30*time.Second)

	write(map[string]int{"b": pb})
	p.Cmd.Process.Signal(syscall.SIGHUP)
	ev := proctest.JSON(t, p.Line(`"event":"reloaded"`, 20*time.Second))
	if fmt.Sprint(ev["started"]) != "[b]" || fmt.Sprint(ev["stopped"]) != "[a]" {
		t.Fatalf("reloaded %v", ev)
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", pb)); err != nil {
		t.Fatalf("added forward: %v", err)
	} else {
		c.Close()
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", pa)); err == nil {
		c.Close()
		t.Fatal("removed forward still listens")
	}

	// An invalid edit leaves the process running as it was.
	os.WriteFile(cfg, []byte("[[forward]]\nport = 1\n"), 0o600)
	p.Cmd.Process.Signal(syscall.SIGHUP)
	p.Line(`"event":"reload_failed"`, 20*time.Second)
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", pb)); err != nil {
		t.Fatalf("after a failed reload: %v", err)
	} else {
		c.Close()
	}
	p.Stop()
	if code := p.Wait(time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestKeygenProcessJSON(t *testing.T) {
	out := filepath.Join(t.TempDir(), "k")
	p := proctest.Start(t, proctest.Env(t, ""), "--json", "keygen", "--out", out)
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	ev := proctest.JSON(t, p.Out.All()[0])
	if ev["event"] != "key" || ev["key_file"] != out || len(ev["public_key"].(string)) != 64 {
		t.Fatalf("event %v", ev)
	}
}
