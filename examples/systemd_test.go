//go:build linux

package examples_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// unitKeys reads the [Service] settings of examples/systemd's unit, the
// last value of each key.
func unitKeys(t *testing.T) (string, map[string]string) {
	t.Helper()
	src, err := os.ReadFile("systemd/keytunnel.service")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(src)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "["):
			section = l
		case section == "[Service]":
			k, v, _ := strings.Cut(l, "=")
			keys[k] = v
		}
	}
	return string(src), keys
}

// TestSystemdUnitVerifies runs `systemd-analyze verify` on the example
// unit, its ExecStart pointed at the built binary (verify wants it to
// exist). Any line it prints (an unknown key, a bad value) fails the test,
// since verify warns about those with exit status 0; a broken copy checks
// that it does.
func TestSystemdUnitVerifies(t *testing.T) {
	bin := proctest.Binary(t)
	analyze := proctest.Tool(t, "systemd-analyze", "apt-get install systemd")
	src, _ := unitKeys(t)
	verify := func(unit string) (string, error) {
		dir := t.TempDir()
		p := filepath.Join(dir, "keytunnel.service")
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/local/bin/keytunnel", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		// verify reports problems on stderr.
		var stderr strings.Builder
		cmd := exec.Command(analyze, "verify", p)
		cmd.Stderr = &stderr
		out, err := proctest.RunBounded(cmd, time.Minute)
		return string(out) + stderr.String(), err
	}
	if out, err := verify(src); err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	if out, err := verify(strings.Replace(src, "ProtectSystem=strict", "ProtectSystem=sometimes", 1)); err == nil && out == "" {
		t.Fatal("verify passed a unit with a bad ProtectSystem value: it would not catch mistakes either")
	}
}

// TestSystemdUnitRunsUp checks what the unit promises against what
// keytunnel does, without systemd (a test must not touch the host's
// services): the unit's ExecStart, with its config path in
// ConfigurationDirectory and its keys in StateDirectory, run with the
// environment systemd gives it ($STATE_DIRECTORY, $NOTIFY_SOCKET pointing
// at a socket of this test) reads the example file's keys from the state
// directory, sends READY=1 once the entry runs, RELOADING=1 then READY=1
// on ExecReload's SIGHUP, and STOPPING=1 on SIGTERM.
func TestSystemdUnitRunsUp(t *testing.T) {
	proctest.Binary(t)
	_, unit := unitKeys(t)
	want := map[string]string{
		"Type":                   "notify",
		"ExecStart":              "/usr/local/bin/keytunnel up -c /etc/keytunnel/keytunnel.toml",
		"ExecReload":             "/bin/kill -HUP $MAINPID",
		"StateDirectory":         "keytunnel",
		"ConfigurationDirectory": "keytunnel",
		"DynamicUser":            "yes",
		"NoNewPrivileges":        "yes",
		"ProtectSystem":          "strict",
	}
	for k, v := range want {
		if unit[k] != v {
			t.Errorf("unit: %s=%q, want %q", k, unit[k], v)
		}
	}
	args := strings.Fields(unit["ExecStart"])
	confPath := args[len(args)-1]
	if filepath.Dir(confPath) != "/etc/"+unit["ConfigurationDirectory"] {
		t.Fatalf("the config file %s is not in ConfigurationDirectory /etc/%s", confPath, unit["ConfigurationDirectory"])
	}

	// The host's paths, under a temporary root.
	root := t.TempDir()
	conf := filepath.Join(root, confPath)
	state := filepath.Join(root, "var/lib", unit["StateDirectory"])
	os.MkdirAll(filepath.Dir(conf), 0o755)
	os.MkdirAll(state, 0o700)
	example, err := os.ReadFile("systemd/keytunnel.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, example, 0o644); err != nil {
		t.Fatal(err)
	}
	// The keys the example names, made where the README says: the state
	// directory. A key beside the file would be a different one.
	keys := map[string]key.PublicKey{}
	for _, m := range regexp.MustCompile(`(?m)^key\s*=\s*"([^"]+)"`).FindAllStringSubmatch(string(example), -1) {
		kp, _ := key.Generate(nil)
		if err := key.WriteSeedFile(filepath.Join(state, m[1]), kp.Seed()); err != nil {
			t.Fatal(err)
		}
		keys[m[1]] = kp.Public
	}
	if len(keys) == 0 {
		t.Fatal("the example file names no key")
	}

	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(root, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	next := func(wantPrefix string) string {
		t.Helper()
		notify.SetReadDeadline(time.Now().Add(60 * time.Second))
		b := make([]byte, 4096)
		n, err := notify.Read(b)
		if err != nil || !strings.HasPrefix(string(b[:n]), wantPrefix) {
			t.Fatalf("notification: %q, %v; want %q...", b[:n], err, wantPrefix)
		}
		return string(b[:n])
	}

	env := append(proctest.Env(t, proctest.Testnet(t, 4)),
		"STATE_DIRECTORY="+state, "NOTIFY_SOCKET="+filepath.Join(root, "notify"))
	// ExecStart's arguments, with the file under the temporary root.
	up := proctest.Start(t, env, append(append([]string{"--json"}, args[1:len(args)-1]...), conf)...)
	ready := next("READY=1\n")
	if !strings.Contains(ready, "STATUS=") {
		t.Errorf("no STATUS line: %q", ready)
	}
	for _, pub := range keys {
		up.Line(`"public_key":"`+pub.String()+`"`, 10*time.Second)
	}

	up.Cmd.Process.Signal(syscall.SIGHUP)
	next("RELOADING=1\nMONOTONIC_USEC=")
	next("READY=1\n")
	up.Line(`"event":"reloaded"`, 10*time.Second)

	up.Cmd.Process.Signal(syscall.SIGTERM)
	next("STOPPING=1")
	if code := up.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}
