//go:build unix

package stack

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fwd.sock")
	// A umask that would leave the socket open to everyone.
	old := syscall.Umask(0)
	ln, err := Listen(UnixPrefix+path, nil)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if got := AddrString(ln.Addr()); got != UnixPrefix+path {
		t.Fatalf("AddrString = %q", got)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket file: %v %v", fi.Mode(), err)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(c); string(b) != "hi" {
		t.Fatalf("read %q", b)
	}
	c.Close()

	// A second listener on a live socket: refused, the socket untouched.
	if _, err := ListenUnix(path, nil); err == nil || !strings.Contains(err.Error(), "is in use: another process listens on it") {
		t.Fatalf("second listen: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file after Close: %v", err)
	}
}

func TestListenUnixStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stale.sock")
	// A socket file nobody accepts on, as a killed process leaves it.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	var logs bytes.Buffer
	ln, err := ListenUnix(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !strings.Contains(logs.String(), "removed a stale socket file") || !strings.Contains(logs.String(), path) {
		t.Fatalf("log: %q", logs.String())
	}
}

func TestListenUnixNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ListenUnix(path, nil)
	if err == nil || err.Error() != "unix:"+path+" exists and is not a socket; remove it or choose another path" {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "data" {
		t.Fatal("the file was touched")
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("x", 120))
	if _, err := ListenUnix(long, nil); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("long path: %v", err)
	}
}
