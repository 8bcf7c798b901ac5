//go:build linux

package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen opens a datagram socket standing in for systemd's and points
// $NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv(SocketEnv, name)
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestNotify(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@keytunnel-sdnotify-test-" + t.Name()} {
		c := listen(t, name)
		if err := Ready("serving 2 entries\nfine"); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, c); got != "READY=1\nSTATUS=serving 2 entries fine" {
			t.Fatalf("%s: got %q", name, got)
		}
		if err := Reloading(); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, c); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
			t.Fatalf("%s: got %q", name, got)
		}
		if err := Stopping(); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, c); got != "STOPPING=1" {
			t.Fatalf("%s: got %q", name, got)
		}
	}
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv(SocketEnv, "")
	if err := Ready("x"); err != nil {
		t.Fatal(err)
	}
	t.Setenv(SocketEnv, filepath.Join(t.TempDir(), "nobody"))
	if err := Ready("x"); err == nil || !strings.Contains(err.Error(), "notifying the service manager") {
		t.Fatalf("err = %v", err)
	}
}
