package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// End-to-end tests: expose and forward as separate processes over a
// loopback testnet.

// e2eTestnet builds the binary (skipping under -short) and starts a
// testnet for it.
func e2eTestnet(t *testing.T) string {
	t.Helper()
	proctest.Binary(t)
	return proctest.Testnet(t, 4)
}

func TestE2EHTTPWithCurl(t *testing.T) {
	bs := e2eTestnet(t)
	curl := proctest.Tool(t, "curl", "apt-get install curl")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from behind a key", r.URL.Path)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	// Text mode, no key: the first line is the key, the second where it is.
	ex := proctest.Start(t, proctest.Env(t, bs), "expose", port)
	pub := ex.First(60 * time.Second)
	if _, err := key.ParsePublicKey(pub); err != nil || len(pub) != 64 {
		t.Fatalf("first line %q", pub)
	}
	ex.Line("new key saved in ", 5*time.Second)

	_, local := proctest.Forward(t, bs, pub)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, path := range []string{"/a", "/b"} {
		out, err := exec.CommandContext(ctx, curl, "-sS", "--max-time", "30", "http://"+local+path).CombinedOutput()
		if err != nil || string(out) != "hello "+path+" from behind a key" {
			t.Fatalf("curl: %v: %q", err, out)
		}
	}
}

// TestE2EParallelOneSession: 100 parallel connections, 1 MiB each way,
// through one forward, ride one peer connection.
func TestE2EParallelOneSession(t *testing.T) {
	bs := e2eTestnet(t)
	echo := proctest.Echo(t)
	keyFile, kp := proctest.WriteSeed(t, "svc.key")
	ex, pub := proctest.Expose(t, bs, echo, "--key", keyFile)
	if pub != kp.Public.String() {
		t.Fatalf("exposed %s, key file holds %s", pub, kp.Public)
	}
	fw, local := proctest.Forward(t, bs, pub)

	const conns, size = 100, 1 << 20
	errs := make(chan error, conns)
	var cw sync.WaitGroup
	for i := range conns {
		cw.Add(1)
		go func() {
			defer cw.Done()
			errs <- oneMiB(local, i, size)
		}()
	}
	cw.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := ex.Out.Count(`"event":"connected"`); n != 1 {
		t.Fatalf("expose saw %d peer connections, want 1", n)
	}
	if n := fw.Out.Count(`"event":"connected"`); n != 1 {
		t.Fatalf("forward made %d peer sessions, want 1", n)
	}
}

func oneMiB(addr string, i, size int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(90 * time.Second))
	data := bytes.Repeat([]byte{byte(i)}, size)
	copy(data, strconv.Itoa(i))
	want := sha256.Sum256(data)
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return fmt.Errorf("conn %d: after %d bytes: %v", i, n, err)
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("conn %d: got %d bytes, digest mismatch", i, n)
	}
	return nil
}

// TestE2EAllow: an exposed service with --allow admits that key only. A
// stranger is refused during the DHT handshake and says so in one line,
// at once; the service never sees it.
func TestE2EAllow(t *testing.T) {
	bs := e2eTestnet(t)
	echo := proctest.Echo(t)
	friendFile, friend := proctest.WriteSeed(t, "friend.key")
	strangerFile, stranger := proctest.WriteSeed(t, "stranger.key")
	ex, pub := proctest.Expose(t, bs, echo, "--allow", friend.Public.Z32())

	// The stranger's connect fails with the refusal, status 1.
	p := connectCmd(t, bs, strangerFile, pub, "should not arrive\n")
	var stderr bytes.Buffer
	p.Stderr = &stderr
	start := time.Now()
	out, err := proctest.RunBounded(p, 60*time.Second)
	took := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(out) != 0 {
		t.Fatalf("stranger connect: %v, stdout %q, stderr %q", err, out, stderr.String())
	}
	if want := refusedLine(pub, stranger.Public.String()); strings.TrimSpace(stderr.String()) != want {
		t.Fatalf("stranger connect stderr:\n%s\nwant the one line %q", stderr.String(), want)
	}
	// Start, join the testnet, look the key up, one handshake: a refusal
	// answered at once, not a dial that timed out.
	if took > refusalWithin {
		t.Fatalf("stranger connect took %v to be refused, want under %v", took, refusalWithin)
	}
	t.Logf("stranger connect refused after %v", took.Round(time.Millisecond))

	// The friend's connect is a working pipe (as under ssh).
	out, err = proctest.RunBounded(connectCmd(t, bs, friendFile, pub, "hello friend\n"), 60*time.Second)
	if err != nil || string(out) != "hello friend\n" {
		t.Fatalf("friend connect: %v, %q", err, out)
	}

	// A stranger's forward: local connections get nothing, the forward
	// reports the refusal, and the service never sees a connection from it.
	fw, local := proctest.Forward(t, bs, pub, "--key", strangerFile)
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("knock"))
	ev := proctest.JSON(t, fw.Line(`"event":"redialing"`, 45*time.Second))
	if e, _ := ev["error"].(string); !strings.Contains(e, refusal(stranger.Public.String())) {
		t.Fatalf("redialing event %v, want the error %q", ev, refusal(stranger.Public.String()))
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := c.Read(make([]byte, 10)); n != 0 {
		t.Fatal("a stranger's forward got data")
	}
	if n := ex.Out.Count(`"event":"connected"`); n != 1 {
		t.Fatalf("expose saw %d connections, want only the friend's", n)
	}
}

// refusal is the error of a dial as client refused by the server's
// firewall (--allow), a keytunnel or a Node server alike (dht.ErrRefused
// underneath): it names the key to allow.
func refusal(client string) string {
	return "the service does not allow this client's key " + client + "; its owner can add it with --allow " + client
}

// refusalWithin bounds a refused connect process, start to exit; a dial
// that timed out instead takes well over it.
const refusalWithin = 3 * time.Second

// refusedLine is the one stderr line of a connect as client refused by
// pub's firewall.
func refusedLine(pub, client string) string {
	return "keytunnel: " + pub + " refused us: " + refusal(client)
}

// connectCmd is `keytunnel connect --key keyFile [extra] pub` on the
// testnet bs, reading stdin.
func connectCmd(t *testing.T, bs, keyFile, pub, stdin string, extra ...string) *exec.Cmd {
	t.Helper()
	p := exec.Command(proctest.Binary(t), append(append([]string{"connect", "--key", keyFile}, extra...), pub)...)
	p.Env = proctest.Env(t, bs)
	proctest.CheckLoopbackOnly(t, p.Env, p.Args[1:])
	p.Stdin = strings.NewReader(stdin)
	return p
}

// TestE2EUp: `up` with an [[expose]] and two [[forward]]s to it, over the
// testnet. A SIGHUP that removes one forward closes its port and its
// connection, while a tunnelled connection held through the unchanged
// forward and expose carries bytes before and after it, and the expose
// keeps serving a second up's forward.
func TestE2EUp(t *testing.T) {
	bs := e2eTestnet(t)
	echo := proctest.Echo(t)
	keyFile, kp := proctest.WriteSeed(t, "svc.key")
	pa, pb := proctest.FreeTCP(t), proctest.FreeTCP(t)
	cfg := filepath.Join(t.TempDir(), "keytunnel.toml")
	expose := fmt.Sprintf("[[expose]]\nname = \"svc\"\naddress = %q\nkey = %q\n", echo, keyFile)
	forward := func(name string, port int) string {
		return fmt.Sprintf("\n[[forward]]\nname = %q\nkey = %q\nport = %d\n", name, kp.Public.Z32(), port)
	}
	if err := os.WriteFile(cfg, []byte(expose+forward("a", pa)+forward("b", pb)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := proctest.Start(t, proctest.Env(t, bs), "--json", "up", "-c", cfg)
	ev := proctest.JSON(t, p.Line(`"entry":"svc"`, 60*time.Second))
	if ev["event"] != "listening" || ev["public_key"] != kp.Public.String() {
		t.Fatalf("expose entry event %v", ev)
	}
	p.Line(`"entry":"a"`, 10*time.Second)
	p.Line(`"entry":"b"`, 10*time.Second)
	dial := func(port int) net.Conn {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ca, cb := dial(pa), dial(pb)
	proctest.RoundTrip(t, ca, "a before the reload")
	proctest.RoundTrip(t, cb, "b before the reload")

	if err := os.WriteFile(cfg, []byte(expose+forward("a", pa)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Cmd.Process.Signal(syscall.SIGHUP)
	ev = proctest.JSON(t, p.Line(`"event":"reloaded"`, 20*time.Second))
	if fmt.Sprint(ev["stopped"]) != "[b]" || fmt.Sprint(ev["kept"]) != "[svc a]" || ev["started"] != nil {
		t.Fatalf("reloaded event %v, want b stopped, svc and a kept", ev)
	}
	// The held connection through the kept entries still carries bytes:
	// neither its stream nor the peer session under it was dropped.
	proctest.RoundTrip(t, ca, "a after the reload, on the same connection")
	cb.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := cb.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the removed forward's connection is still open (read %d bytes)", n)
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", pb)); err == nil {
		c.Close()
		t.Fatal("removed forward still listens")
	}
	_, local := proctest.Forward(t, bs, kp.Public.String())
	proctest.EchoOnce(t, local, "the kept expose still serves")
	proctest.RoundTrip(t, ca, "a once more")
}
