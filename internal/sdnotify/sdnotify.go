// Package sdnotify tells a service manager such as systemd what state the
// process is in, by the sd_notify(3) protocol: one datagram of
// newline-separated VAR=value lines to the Unix datagram socket named by
// $NOTIFY_SOCKET (a path, or @name for Linux's abstract namespace).
//
// It is the few lines keytunnel needs (READY=1 when every entry runs,
// RELOADING=1 and READY=1 around a reload, STOPPING=1), written here
// rather than taken from a library: the protocol is one sendto, and
// go-systemd would bring D-Bus and journal packages along.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// SocketEnv names the environment variable the service manager sets.
const SocketEnv = "NOTIFY_SOCKET"

// Notify sends state (lines such as "READY=1\nSTATUS=...") to
// $NOTIFY_SOCKET. Without that variable it does nothing and returns nil:
// the process does not run under a manager that listens.
func Notify(state string) error {
	sock := os.Getenv(SocketEnv)
	if sock == "" {
		return nil
	}
	if strings.HasPrefix(sock, "vsock:") {
		return fmt.Errorf("%s=%s: vsock is not supported", SocketEnv, sock)
	}
	// A leading @ is an abstract socket; Go's net package reads it so.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notifying the service manager at %s: %w", sock, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notifying the service manager at %s: %w", sock, err)
	}
	return nil
}

// Ready says the service is up; status is a line for `systemctl status`.
func Ready(status string) error {
	return Notify("READY=1\nSTATUS=" + oneLine(status))
}

// Reloading says a reload has begun; Ready ends it. The timestamp lets
// Type=notify-reload units (systemd 253 and later) match the two.
func Reloading() error {
	s := "RELOADING=1"
	if us, ok := monotonicUsec(); ok {
		s += fmt.Sprintf("\nMONOTONIC_USEC=%d", us)
	}
	return Notify(s)
}

// Stopping says the service is shutting down.
func Stopping() error { return Notify("STOPPING=1") }

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
