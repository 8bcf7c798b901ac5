package main

import (
	"errors"
	"io"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestTargetDown: when the exposed service is down, connect fails (exit
// 1, one line saying so) and a forwarded connection is reset, not ended
// empty; both sides log it.
func TestTargetDown(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	down := "127.0.0.1:" + strconv.Itoa(proctest.FreeTCP(t)) // nothing listens
	ex, pub := proctest.Expose(t, bs, down)

	out, stderr, err := runConnect(t, proctest.Env(t, bs), "hello", pub)
	want := "keytunnel: " + pub + " reset the connection: the service behind it is down, or its limits refused this connection (the exposing side's log says why)\n"
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(out) != 0 || stderr != want {
		t.Fatalf("connect: %v, stdout %q\nstderr %q\nwant   %q", err, out, stderr, want)
	}

	fw, addr := proctest.Forward(t, bs, pub)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	if b, err := io.ReadAll(c); len(b) != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("forwarded connection: %q, %v; want a reset", b, err)
	}
	fw.ErrLine("the exposing side reset the connection", 10*time.Second)
	ex.ErrLine("cannot reach target", 10*time.Second)
}
