package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/holesail"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// holesail 2.4.1 (holesail, holesail-server, holesail-client) against
// keytunnel in TCP mode, both ways, public and private ("secure"), by
// connection string, run by interop/holesail-peer.js on the test's
// testnet.

// echoOn127002 starts an echo service on 127.0.0.2, so that a client
// that listens on the service's port (holesail's default, taken from its
// record) can bind 127.0.0.1 on the same machine.
func echoOn127002(t *testing.T) (addr string, port string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	proctest.ServeOn(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return ln.Addr().String(), port
}

// holesailServer starts holesail's server (the Holesail class, as
// `holesail --live PORT --host HOST [--public]` runs it) and returns its
// connection string.
func holesailServer(t *testing.T, bs, host, port, mode string) string {
	t.Helper()
	p := nodetest.Start(t, "holesail-peer.js", bs, "server", host, port, mode)
	return p.Expect("url ", 60*time.Second)
}

// holesailClient starts holesail's client (as `holesail URL [--port P]`)
// and returns what it listens on and its protocol.
func holesailClient(t *testing.T, bs, url string, port ...string) (listen, protocol string) {
	t.Helper()
	p := nodetest.Start(t, "holesail-peer.js", append([]string{bs, "client", url}, port...)...)
	f := strings.Fields(p.Expect("listening ", 60*time.Second))
	if len(f) != 2 {
		t.Fatalf("holesail client printed %q", f)
	}
	return f[0], f[1]
}

// writeSecret writes s into a new file, mode 0600.
func writeSecret(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "service.secret")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// forwarding starts `keytunnel --json forward args...` and returns the
// process and its forwarding event.
func forwarding(t *testing.T, env []string, args ...string) (*proctest.Proc, map[string]any) {
	t.Helper()
	p := proctest.Start(t, env, append([]string{"--json", "--log-level", "debug", "forward"}, args...)...)
	return p, proctest.JSON(t, p.Line(`"event":"forwarding"`, 60*time.Second))
}

func noSecretIn(t *testing.T, secret string, procs ...*proctest.Proc) {
	t.Helper()
	for _, p := range procs {
		if strings.Contains(p.Err.String(), secret) {
			t.Fatalf("%s logged the secret:\n%s", p.Name, p.Err)
		}
	}
}

// A public holesail server: keytunnel forward takes its hs://0000 string
// and, given no port, listens on the port of the server's record.
func TestE2EHolesailPublicServerToForward(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	_, port := echoOn127002(t)
	url := holesailServer(t, bs, "127.0.0.2", port, "public")
	if !strings.HasPrefix(url, "hs://0000") {
		t.Fatalf("holesail public url %q", url)
	}
	_, ev := forwarding(t, proctest.Env(t, bs), url)
	if want := "127.0.0.1:" + port; ev["listen"] != want {
		t.Fatalf("forward of %s listens on %v, want %s (the record's port)", url, ev["listen"], want)
	}
	echoThrough(t, ev["listen"].(string), 1, 1<<20)
	echoThrough(t, ev["listen"].(string), 4, 128<<10)
}

// A private holesail server: keytunnel forward dials with the string's
// key pair, the string read from a file, from the environment, or (with a
// warning) from the command line; nothing logs the secret.
func TestE2EHolesailSecureServerToForward(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	_, port := echoOn127002(t)
	url := holesailServer(t, bs, "127.0.0.2", port, "secure")
	if !holesail.LooksPrivate(url) {
		t.Fatalf("holesail secure url %q", url)
	}
	conn, err := holesail.Parse(url, false)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimPrefix(url, "hs://s000")

	byFile, ev := forwarding(t, proctest.Env(t, bs), "--secret-file", writeSecret(t, url), "0")
	echoThrough(t, ev["listen"].(string), 1, 1<<20)
	echoThrough(t, ev["listen"].(string), 4, 128<<10)
	if ev["remote"] != conn.PublicKey.String() {
		t.Fatalf("forwarding to %v, want the string's public key %s", ev["remote"], conn.PublicKey)
	}

	// The environment, with the public key on the command line (as ssh's
	// %h would give it).
	byEnv, ev := forwarding(t, append(proctest.Env(t, bs), "KEYTUNNEL_SECRET="+url), conn.PublicKey.Z32(), "0")
	proctest.EchoOnce(t, ev["listen"].(string), "by env")

	// On the command line: works, with a warning.
	byArg, ev := forwarding(t, proctest.Env(t, bs), url, "0")
	proctest.EchoOnce(t, ev["listen"].(string), "by argv")
	byArg.ErrLine("shows its secret to every user", 10*time.Second)
	if byFile.Err.Count("shows its secret") != 0 || byEnv.Err.Count("shows its secret") != 0 {
		t.Fatal("a string from a file or the environment warned about the command line")
	}
	noSecretIn(t, secret, byFile, byEnv, byArg)

	// Without the secret: the public key alone is turned away.
	_, ev = forwarding(t, proctest.Env(t, bs), "--raw", conn.PublicKey.String(), "0")
	noEcho(t, ev["listen"].(string))
}

// noEcho checks that a connection through addr gets nothing back: the
// service behind it refused the client.
func noEcho(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(c, "x")
	if n, _ := c.Read(make([]byte, 1)); n != 0 {
		t.Fatalf("a client without the secret got an echo through %s", addr)
	}
}

// holesail-server's own API prints, in secure mode, the seed in z-base-32
// (and in public mode the public key): keytunnel forward takes the first
// with --private, the second with --raw.
func TestE2EHolesailRawServerKeys(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	_, port := echoOn127002(t)
	seed, _ := rawSeed(t)
	for _, mode := range []string{"secure", "public"} {
		t.Run(mode, func(t *testing.T) {
			srv := nodetest.Start(t, "holesail-peer.js", bs, "rawserver", "127.0.0.2", port, seed, mode)
			k := srv.Expect("key ", 60*time.Second)
			args := []string{"--raw", k, "0"}
			if mode == "secure" {
				args = []string{"--secret-file", writeSecret(t, k), "0"}
			}
			fw, ev := forwarding(t, proctest.Env(t, bs), args...)
			echoThrough(t, ev["listen"].(string), 2, 256<<10)
			noSecretIn(t, k, fw)
		})
	}
}

// keytunnel expose --holesail: a holesail client given only the
// hs://0000 string finds port and protocol in keytunnel's record, and
// holesail's lookup reads the record.
func TestE2EExposeHolesailToHolesailClient(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	echo, port := echoOn127002(t)
	ex, pub := proctest.Expose(t, bs, echo, "--holesail")
	ev := proctest.JSON(t, ex.Out.All()[0])
	url, _ := ev["connection"].(string)
	if c, err := holesail.Parse(url, false); err != nil || c.Private || c.PublicKey.String() != pub || !strings.HasPrefix(url, "hs://0000") {
		t.Fatalf("expose --holesail printed connection %q (public key %s): %v", url, pub, err)
	}
	lk := nodetest.Start(t, "holesail-peer.js", bs, "lookup", url).Expect("lookup ", 60*time.Second)
	var rec map[string]any
	if err := json.Unmarshal([]byte(lk), &rec); err != nil || rec["port"] != float64(mustAtoi(t, port)) || rec["protocol"] != "tcp" || rec["host"] != "127.0.0.1" {
		t.Fatalf("holesail lookup of %s: %s (%v)", url, lk, err)
	}
	listen, proto := holesailClient(t, bs, url)
	if listen != "127.0.0.1:"+port || proto != "tcp" {
		t.Fatalf("holesail client listens on %s %s, want 127.0.0.1:%s tcp from the record", listen, proto, port)
	}
	echoThrough(t, listen, 1, 1<<20)
	echoThrough(t, listen, 4, 128<<10)
	if n, raw := ex.Out.Count(`"event":"connected"`), connected(ex, "raw"); n != 5 || raw != 5 {
		t.Fatalf("expose saw %d connections, %d raw; want the holesail client's 5, raw", n, raw)
	}

	// keytunnel's forward of the same string reads the record's keytunnel
	// field and speaks one mux session (a holesail server gets raw).
	_, fev := forwarding(t, proctest.Env(t, bs), url, "0")
	echoThrough(t, fev["listen"].(string), 3, 64<<10)
	if mux, raw := connected(ex, "mux"), connected(ex, "raw"); mux != 1 || raw != 5 {
		t.Fatalf("keytunnel's forward of 3 connections: expose saw %d mux sessions and %d more raw connections, want one session", mux, raw-5)
	}
}

// keytunnel expose --private --holesail: a holesail client with the
// private string (hs://s000…) gets in and learns the port from the
// record; a keytunnel forward gets in with the same string; clients with
// only the public key are refused.
func TestE2EExposePrivateToHolesailAndForward(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	echo, port := echoOn127002(t)
	env := proctest.Env(t, bs)
	ex := proctest.Start(t, env, "--json", "expose", "--private", "--holesail", echo)
	ev := proctest.JSON(t, ex.Line(`"event":"listening"`, 60*time.Second))
	url, _ := ev["connection"].(string)
	c, err := holesail.Parse(url, false)
	if err != nil || !c.Private || c.PublicKey.String() != ev["public_key"] || ev["private"] != true {
		t.Fatalf("expose --private: listening event %v: %v", ev, err)
	}
	secret := strings.TrimPrefix(url, "hs://s000")
	if len(secret) != 64 {
		t.Fatalf("secret of %d characters, want 64 (32 random bytes in hex, as holesail)", len(secret))
	}

	listen, proto := holesailClient(t, bs, url)
	if listen != "127.0.0.1:"+port || proto != "tcp" {
		t.Fatalf("holesail client listens on %s %s, want 127.0.0.1:%s tcp", listen, proto, port)
	}
	echoThrough(t, listen, 1, 1<<20)
	echoThrough(t, listen, 4, 128<<10)

	fw, fev := forwarding(t, proctest.Env(t, bs), "--secret-file", writeSecret(t, url), "0")
	echoThrough(t, fev["listen"].(string), 2, 256<<10)

	// A holesail client in public mode and a keytunnel forward with its
	// own key: both have the public key only.
	pubOnly, _ := holesailClient(t, bs, "hs://0000"+c.PublicKey.Z32(), fmt.Sprint(proctest.FreeTCP(t)))
	noEcho(t, pubOnly)
	stranger := proctest.Start(t, proctest.Env(t, bs), "connect", c.PublicKey.String())
	if code := stranger.Wait(60 * time.Second); code == 0 {
		t.Fatal("connect without the secret succeeded")
	}
	stranger.ErrLine("refused", time.Second)
	ex.ErrLine("refused a client", 10*time.Second)
	noSecretIn(t, secret, ex, fw, stranger)

	// Restarted, expose serves the same string (saved, mode 0600).
	ex.Stop()
	again := proctest.Start(t, env, "--json", "expose", "--private", echo)
	ev2 := proctest.JSON(t, again.Line(`"event":"listening"`, 60*time.Second))
	if ev2["connection"] != url {
		t.Fatalf("restarted expose --private serves %v, want the saved %s", ev2["connection"], url)
	}
	if st, err := os.Stat(ev2["key_file"].(string)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file %v: %v %v", ev2["key_file"], st, err)
	}
}

// connected counts expose's connected events in mode.
func connected(ex *proctest.Proc, mode string) int {
	n := 0
	for _, l := range ex.Out.All() {
		if strings.Contains(l, `"event":"connected"`) && strings.Contains(l, `"mode":"`+mode+`"`) {
			n++
		}
	}
	return n
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// up: an [[expose]] with secret_file and holesail = true, a [[forward]]
// with the same secret_file, and a holesail client with the string that
// learns the port from the record.
func TestE2EUpPrivateHolesail(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	echo, port := echoOn127002(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "web.secret")
	c, _ := holesail.New(nil)
	s := strings.TrimPrefix(c.String(), "hs://s000")
	if err := holesail.WriteSecretFile(secret, c); err != nil {
		t.Fatal(err)
	}
	fport := proctest.FreeTCP(t)
	cfg := filepath.Join(dir, "keytunnel.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
[[expose]]
name = "web"
address = %q
secret_file = "web.secret"
holesail = true

[[forward]]
name = "web-here"
secret_file = "web.secret"
port = %d
`, echo, fport)), 0o600)
	up := proctest.Start(t, proctest.Env(t, bs), "--json", "up", "-c", cfg)
	ev := proctest.JSON(t, up.Line(`"entry":"web"`, 60*time.Second))
	if ev["public_key"] != c.PublicKey.String() || ev["private"] != true || ev["connection"] != nil {
		t.Fatalf("up's private expose: %v (want its public key %s, no string printed)", ev, c.PublicKey)
	}
	up.Line(`"entry":"web-here"`, 60*time.Second)
	echoThrough(t, fmt.Sprintf("127.0.0.1:%d", fport), 2, 256<<10)
	listen, proto := holesailClient(t, bs, c.String())
	if listen != "127.0.0.1:"+port || proto != "tcp" {
		t.Fatalf("holesail client listens on %s %s, want 127.0.0.1:%s tcp", listen, proto, port)
	}
	echoThrough(t, listen, 2, 256<<10)
	noSecretIn(t, s, up)
	if strings.Contains(up.Out.String(), s) {
		t.Fatal("up printed the secret")
	}
}
