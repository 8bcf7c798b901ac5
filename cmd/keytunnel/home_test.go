package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestE2ENoHome: without HOME (a service manager, `env -i`), each command
// works where it needs no directory of the user's, finds one in the XDG
// variables when they are set, and otherwise fails with one line saying
// what to set.
func TestE2ENoHome(t *testing.T) {
	bs := e2eTestnet(t)
	noHome := func(extra ...string) []string {
		return append([]string{"PATH=" + os.Getenv("PATH"), dht.BootstrapEnv + "=" + bs}, extra...)
	}
	fails := func(env []string, want string, args ...string) {
		t.Helper()
		p := proctest.Start(t, env, args...)
		if code := p.Wait(20 * time.Second); code != 1 || p.Err.String() != want+"\n" || p.Out.String() != "" {
			t.Fatalf("%v: exit %d, stderr %q (want %q), stdout %q", args, code, p.Err.String(), want, p.Out.String())
		}
	}

	// expose keeps a new key under the config directory.
	fails(noHome(), "keytunnel: no directory to keep the key in: $HOME is not set; set HOME (or XDG_CONFIG_HOME), or pass --key FILE", "expose", "8080")
	cfg := t.TempDir()
	ex := proctest.Start(t, noHome("XDG_CONFIG_HOME="+cfg), "--json", "expose", proctest.Echo(t))
	pub, _ := proctest.JSON(t, ex.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string)
	if keys, _ := filepath.Glob(filepath.Join(cfg, "keytunnel", "keys", "*")); len(pub) != 64 || len(keys) != 1 {
		t.Fatalf("expose with XDG_CONFIG_HOME: key %q, key files %v", pub, keys)
	}

	// keygen needs no directory.
	kg := proctest.Start(t, noHome(), "keygen")
	if code := kg.Wait(20 * time.Second); code != 0 || !strings.Contains(kg.Out.String(), "seed ") {
		t.Fatalf("keygen: exit %d, stdout %q, stderr %q", code, kg.Out.String(), kg.Err.String())
	}

	// status needs the control sockets' directory.
	fails(noHome(), "keytunnel: no directory for control sockets: $HOME is not set; set HOME (or XDG_CONFIG_HOME), or set XDG_RUNTIME_DIR", "status")

	// forward runs, unseen by status, and says so once.
	fw := proctest.Start(t, noHome(), "--json", "forward", pub, "0")
	local, _ := proctest.JSON(t, fw.Line(`"event":"forwarding"`, 60*time.Second))["listen"].(string)
	proctest.EchoOnce(t, local, "without HOME")
	if w := fw.ErrLine("no control socket", 10*time.Second); !strings.Contains(w, "set XDG_RUNTIME_DIR") {
		t.Fatalf("forward's warning: %s", w)
	}
	// With XDG_RUNTIME_DIR, status sees a forward without HOME.
	run := noHome("XDG_RUNTIME_DIR=" + t.TempDir())
	fw2 := proctest.Start(t, run, "--json", "forward", pub, "0")
	fw2.Line(`"event":"forwarding"`, 60*time.Second)
	if rep := statusJSON(t, run); len(rep.Processes) != 1 || rep.Processes[0].PID != fw2.Pid() {
		t.Fatalf("status without HOME: %+v", rep)
	}
}
