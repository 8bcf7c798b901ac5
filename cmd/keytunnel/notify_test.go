//go:build linux

package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestE2EExposeForwardNotifyReady: run as services of their own (under
// systemd, Type=notify), expose and forward send READY=1 to
// $NOTIFY_SOCKET once they serve, with a status line naming what.
func TestE2EExposeForwardNotifyReady(t *testing.T) {
	bs := e2eTestnet(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	next := func() string {
		t.Helper()
		notify.SetReadDeadline(time.Now().Add(60 * time.Second))
		b := make([]byte, 4096)
		n, err := notify.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[:n])
	}
	env := append(proctest.Env(t, bs), "NOTIFY_SOCKET="+sock)
	echo := proctest.Echo(t)
	ex := proctest.Start(t, env, "expose", echo)
	pub := ex.First(60 * time.Second)
	if got, want := next(), "READY=1\nSTATUS=exposing "+echo+" as "+pub; got != want {
		t.Fatalf("expose notified %q, want %q", got, want)
	}
	proctest.Start(t, env, "forward", pub, "unix:"+filepath.Join(dir, "fwd.sock"))
	if got := next(); !strings.HasPrefix(got, "READY=1\nSTATUS=forwarding unix:"+filepath.Join(dir, "fwd.sock")+" to "+pub) {
		t.Fatalf("forward notified %q", got)
	}
}
