package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestConnectCtrlC: connect joined to a service exits promptly on the
// first SIGINT (Ctrl-C) while its stdin, a blocking pipe as under ssh or a
// shell, stays open with nothing to read.
func TestConnectCtrlC(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	_, pub := proctest.Expose(t, bs, proctest.Echo(t))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	args := []string{"--json", "connect", pub}
	env := proctest.Env(t, bs)
	proctest.CheckLoopbackOnly(t, env, args)
	cmd := exec.Command(proctest.Binary(t), args...)
	cmd.Stdin = r
	p := proctest.StartCmd(t, cmd, env)
	r.Close()
	p.ErrLine(`"event":"connected"`, 60*time.Second)
	p.Cmd.Process.Signal(syscall.SIGINT)
	// Before the fix it waited for stdin to close (19 s in one report):
	// 5 s is a bound, not a speed target.
	if code := p.Wait(5 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT\n%s", code, p.Err)
	}
}
