package tunnel

import (
	"context"
	"net"
	"syscall"
	"testing"
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
// for a loopback target and turns it on for any other address (here one
// of this host's own non-loopback addresses, when it has one).
func TestTargetKeepAlive(t *testing.T) {
	tg := newTarget(t, echo)
	e := NewExposer(newFakeNet(t).listen(genKey(t)), tg.addr(), ExposeOptions{Logger: testLogger(t, nil)})
	defer e.Close()
	c, err := e.opts.DialTarget(context.Background(), tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if keepAliveOn(t, c) {
		t.Fatal("keepalive on for a loopback target")
	}

	ip := nonLoopbackIP(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Skipf("no listener on %s: %v", ip, err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	r, err := e.opts.DialTarget(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !keepAliveOn(t, r) {
		t.Fatal("keepalive off for a target on another address")
	}
}

func nonLoopbackIP(t *testing.T) net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP
		}
	}
	t.Skip("no non-loopback IPv4 address")
	return nil
}
