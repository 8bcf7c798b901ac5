package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestHangupIgnored: SIGHUP neither kills expose nor forward (only up
// reloads on it); each logs that it ignored it and keeps tunnelling.
func TestHangupIgnored(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	ex, pub := proctest.Expose(t, bs, proctest.Echo(t))
	fw, addr := proctest.Forward(t, bs, pub)
	proctest.EchoOnce(t, addr, "before")
	for _, p := range []*proctest.Proc{ex, fw} {
		p.Cmd.Process.Signal(syscall.SIGHUP)
	}
	for _, p := range []*proctest.Proc{ex, fw} {
		p.ErrLine("SIGHUP ignored", 10*time.Second)
	}
	proctest.EchoOnce(t, addr, "after SIGHUP")
	for _, p := range []*proctest.Proc{fw, ex} {
		p.Stop()
		if code := p.Wait(time.Second); code != 0 {
			t.Fatalf("%s: exit %d", p.Name, code)
		}
	}
}
