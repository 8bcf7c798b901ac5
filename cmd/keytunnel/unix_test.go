//go:build unix

package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// unixEcho serves an echo service on a Unix socket at path.
func unixEcho(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	proctest.ServeOn(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		io.Copy(c, c)
		c.(*net.UnixConn).CloseWrite()
	})
}

// unixRoundTrip sends msg through the Unix socket at path (a forward's)
// and checks that the whole of it comes back after a half-close.
func unixRoundTrip(t *testing.T, path, msg string) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(c, msg)
	c.(*net.UnixConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("echo through unix:%s: %q, %v", path, got, err)
	}
}

func checkMode0600(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: want a socket of mode 0600: %v, %v", path, fi.Mode(), err)
	}
}

// TestE2EUnixSockets: a service on a Unix socket, exposed by `expose
// unix:PATH`, reached through `forward KEY unix:PATH`; the forward's
// socket has mode 0600 whatever the umask, a killed forward's socket is
// taken over by the next one with a line saying so, a live one or a
// regular file is refused with a clear line, and SIGTERM removes it.
func TestE2EUnixSockets(t *testing.T) {
	bs := e2eTestnet(t)
	dir := t.TempDir()
	app := filepath.Join(dir, "app.sock")
	unixEcho(t, app)
	_, pub := proctest.Expose(t, bs, "unix:"+app)

	fwdSock := filepath.Join(dir, "fwd.sock")
	forward := func() *proctest.Proc {
		// umask 0 would leave a plain socket open to every user.
		old := syscall.Umask(0)
		defer syscall.Umask(old)
		return proctest.Start(t, proctest.Env(t, bs), "--json", "forward", pub, "unix:"+fwdSock)
	}
	fw := forward()
	ev := proctest.JSON(t, fw.Line(`"event":"forwarding"`, 60*time.Second))
	if ev["listen"] != "unix:"+fwdSock {
		t.Fatalf("forwarding event: %v", ev)
	}
	checkMode0600(t, fwdSock)
	unixRoundTrip(t, fwdSock, strings.Repeat("through a key to a socket ", 4096))

	// Killed, the forward cannot remove its socket: the next one does.
	fw.Cmd.Process.Kill()
	fw.Wait(10 * time.Second)
	if _, err := os.Lstat(fwdSock); err != nil {
		t.Fatalf("after SIGKILL the socket file should still be there: %v", err)
	}
	fw = forward()
	fw.ErrLine("removed a stale socket file", 30*time.Second)
	fw.Line(`"event":"forwarding"`, 60*time.Second)
	checkMode0600(t, fwdSock)
	unixRoundTrip(t, fwdSock, "again")

	// A second forward on the live socket fails and leaves it alone.
	second := proctest.Start(t, proctest.Env(t, bs), "forward", pub, "unix:"+fwdSock)
	if code := second.Wait(30 * time.Second); code != 1 {
		t.Fatalf("second forward on a live socket: exit %d", code)
	}
	if want := "keytunnel: unix:" + fwdSock + " is in use: another process listens on it (stop it, or choose another path)\n"; second.Err.String() != want {
		t.Fatalf("stderr %q, want %q", second.Err.String(), want)
	}
	unixRoundTrip(t, fwdSock, "still served")

	fw.Stop()
	if _, err := os.Lstat(fwdSock); !os.IsNotExist(err) {
		t.Fatalf("socket file after SIGTERM: %v", err)
	}

	// Not a socket: refused, untouched.
	file := filepath.Join(dir, "notes.txt")
	os.WriteFile(file, []byte("keep"), 0o600)
	p := proctest.Start(t, proctest.Env(t, bs), "forward", pub, "unix:"+file)
	if code := p.Wait(30 * time.Second); code != 1 || !strings.Contains(p.Err.String(), "exists and is not a socket; remove it or choose another path") {
		t.Fatalf("forward onto a regular file: exit %d, stderr %q", code, p.Err.String())
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("the file was changed")
	}
}

// TestE2EUnixSocketsUp: the same forms in a TOML file, relative paths
// taken from the file's directory: `up` exposes a Unix socket service and
// forwards to it on a Unix socket of its own, which it removes on exit.
func TestE2EUnixSocketsUp(t *testing.T) {
	bs := e2eTestnet(t)
	dir := t.TempDir()
	unixEcho(t, filepath.Join(dir, "app.sock"))
	keyFile, kp := proctest.WriteSeed(t, "app.key")
	conf := filepath.Join(dir, "keytunnel.toml")
	os.WriteFile(conf, []byte(`
[[expose]]
name = "app"
address = "unix:app.sock"
key = "`+keyFile+`"

[[forward]]
name = "local"
key = "`+kp.Public.String()+`"
listen = "unix:fwd.sock"
`), 0o644)
	up := proctest.Start(t, proctest.Env(t, bs), "up", "-c", conf)
	up.Line("app: exposing unix:"+filepath.Join(dir, "app.sock"), 60*time.Second)
	up.Line("local: forwarding unix:"+filepath.Join(dir, "fwd.sock"), 60*time.Second)
	fwdSock := filepath.Join(dir, "fwd.sock")
	checkMode0600(t, fwdSock)
	unixRoundTrip(t, fwdSock, "up through a socket")
	up.Stop()
	if _, err := os.Lstat(fwdSock); !os.IsNotExist(err) {
		t.Fatalf("socket file after SIGTERM: %v", err)
	}
}
