package tunnel

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/keytunnel/keytunnel/internal/natlab"
)

func keepAliveOn(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v != 0
}

// TestTargetKeepAlive: Expose's default dialer leaves TCP keepalive off
// for a loopback target and turns it on for any other address: here a NAT
// lab host's own address, dialled from inside its namespace, so the test
// needs no non-loopback address on this machine and sends nothing to one.
func TestTargetKeepAlive(t *testing.T) {
	tg := newTarget(t, echo)
	e := NewExposer(newFakeNet(t).listen(genKey(t)), tg.addr(), ExposeOptions{Logger: testLogger(t, nil)})
	defer e.Close()
	c, err := e.def.dial(context.Background(), tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if keepAliveOn(t, c) {
		t.Fatal("keepalive on for a loopback target")
	}

	lab := natlab.New(t) // skips outside CI when the lab cannot run, fails in CI
	h := lab.Host(lab.Public())
	ln := h.ListenTCP(0)
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	var r net.Conn
	if err := h.Run(func() (err error) {
		r, err = e.def.dial(context.Background(), h.AddrPort(uint16(ln.Addr().(*net.TCPAddr).Port)).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !keepAliveOn(t, r) {
		t.Fatalf("keepalive off for a target on %v", r.RemoteAddr())
	}
}
