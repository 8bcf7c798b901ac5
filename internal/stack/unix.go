package stack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// UnixPrefix marks a Unix socket in an address: "unix:/run/app.sock".
// tunnel.DialTarget reads the same form.
const UnixPrefix = "unix:"

// Address reads an expose target or a forward's listen address: what
// HostPort reads, or unix:PATH for a Unix socket (a relative PATH is taken
// from the current directory and made absolute, so that logs and the
// removal on exit name one file).
func Address(what, s string, zeroOK bool) (string, error) {
	path, ok := strings.CutPrefix(s, UnixPrefix)
	if !ok {
		return hostPort(what, s, zeroOK, "PORT, HOST:PORT or unix:PATH")
	}
	if path == "" {
		return "", fmt.Errorf("%s %q: want unix:PATH, the path of a Unix socket", what, s)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", what, s, err)
	}
	return UnixPrefix + abs, nil
}

// AddrString is how a listener's address is printed: host:port, or
// unix:PATH for a Unix socket (the form Address reads).
func AddrString(a net.Addr) string {
	if a.Network() == "unix" {
		return UnixPrefix + a.String()
	}
	return a.String()
}

// Listen opens a forward's local address (see Address): a TCP port as
// ListenTCP does, or a Unix socket as ListenUnix does.
func Listen(addr string, log *slog.Logger) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
		return ListenUnix(path, log)
	}
	return ListenTCP(addr)
}

// ListenUnix opens a Unix socket at path, mode 0600 (only this user may
// connect), which Close removes. A socket file left by a process that
// died (nobody accepts on it) is removed first, and logged; a live
// socket or any other file at path is an error saying so.
func ListenUnix(path string, log *slog.Logger) (net.Listener, error) {
	if err := removeStaleSocket(path, log); err != nil {
		return nil, err
	}
	// unixControl (Linux) gives the socket mode 0600 before bind, so the
	// file is never open to others, even for a moment; elsewhere the
	// Chmod below is what restricts it.
	lc := net.ListenConfig{Control: unixControl}
	ln, err := lc.Listen(context.Background(), "unix", path)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("unix:%s is already in use (another process created it just now)", path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("unix:%s: permission denied (this user cannot create files in %s)", path, filepath.Dir(path))
	case errors.Is(err, syscall.EINVAL) && len(path) > 100:
		return nil, fmt.Errorf("unix:%s: the path is too long for a Unix socket (%d bytes; the limit is about 104-108); choose a shorter one", path, len(path))
	case err != nil:
		return nil, fmt.Errorf("listening on unix:%s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("unix:%s: restricting the socket to this user: %w", path, err)
	}
	return ln, nil
}

// removeStaleSocket clears the way for a new socket at path: nothing
// there is fine, a socket nobody accepts on is removed (a process that
// was killed cannot remove its own), anything else is an error.
func removeStaleSocket(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("unix:%s: %w", path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("unix:%s exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("unix:%s is in use: another process listens on it (stop it, or choose another path)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("unix:%s exists and cannot be checked (%v); remove it if no process uses it", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unix:%s is a stale socket (nobody listens on it) and cannot be removed: %w", path, err)
	}
	if log != nil {
		log.Warn("removed a stale socket file (left by a process that exited without removing it)", "path", path)
	}
	return nil
}
