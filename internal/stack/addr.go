package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/keytunnel/keytunnel/internal/key"
)

// ParsePublicKey reads a public key in hex or z-base-32, with an error a
// user can act on.
func ParsePublicKey(s string) (key.PublicKey, error) {
	k, err := key.ParsePublicKey(s)
	if err != nil {
		return k, fmt.Errorf("%q is not a public key (want 64 hex or 52 z-base-32 characters)", s)
	}
	return k, nil
}

// HostPort reads "PORT" (meaning 127.0.0.1:PORT) or "HOST:PORT". Port 0 is
// allowed only if zeroOK. what names the value in errors.
func HostPort(what, s string, zeroOK bool) (string, error) {
	return hostPort(what, s, zeroOK, "PORT or HOST:PORT")
}

// hostPort is HostPort, with the forms the caller accepts named in the
// error for a value of none of them.
func hostPort(what, s string, zeroOK bool, forms string) (string, error) {
	if p, err := strconv.Atoi(s); err == nil {
		s = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%s %q: want %s", what, s, forms)
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !zeroOK) {
		return "", fmt.Errorf("%s %q: %q is not a TCP port", what, s, ps)
	}
	if h == "" {
		h = "127.0.0.1"
	}
	return net.JoinHostPort(h, ps), nil
}

// ListenUDP opens a UDP forward's local socket, with the errors of
// ListenTCP. Its receive buffer is 4 MiB where the system allows
// (net.core.rmem_max): some 3,000 datagrams of 1200 bytes, 30 ms at 100k
// a second, that the forward may fall behind its clients by before the
// kernel drops datagrams; Linux's default of 208 KiB holds 2 ms.
func ListenUDP(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on udp %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, listenErr("udp "+addr, err)
	}
	pc.SetReadBuffer(4 << 20)
	return pc, nil
}

// ListenTCP opens a forward's local port with a clear error when it is
// taken. Accepted connections come without TCP keepalive; the Forwarder
// turns it on for clients on other hosts.
func ListenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, listenErr(addr, err)
	}
	return ln, nil
}

func listenErr(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s is already in use (another program listens there)", addr)
	}
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%s: permission denied (ports below 1024 need privileges)", addr)
	}
	return fmt.Errorf("listening on %s: %w", addr, err)
}
