package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestAllowRefusal: a client outside --allow is told that the service
// refused its key, with the key; the exposing side logs the refusal and
// emits the refused event; forward fails local connections at once and
// does not keep redialing.
func TestAllowRefusal(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	_, friend := proctest.WriteSeed(t, "friend.key")
	strangerFile, stranger := proctest.WriteSeed(t, "stranger.key")
	ex, pub := proctest.Expose(t, bs, proctest.Echo(t), "--allow", friend.Public.String())
	sk := stranger.Public.String()

	out, stderr, err := runConnect(t, proctest.Env(t, bs), "should not arrive", "--key", strangerFile, pub)
	want := "keytunnel: " + pub + " refused us: the service does not allow this client's key " + sk + "; its owner can add it with --allow " + sk + "\n"
	if err == nil || len(out) != 0 || stderr != want {
		t.Fatalf("stranger connect: %v, stdout %q\nstderr %q\nwant   %q", err, out, stderr, want)
	}
	ex.Line(`"event":"refused","time":`, 10*time.Second)
	if ev := proctest.JSON(t, ex.Line(`"event":"refused"`, time.Second)); ev["remote"] != sk {
		t.Fatalf("refused event %v", ev)
	}
	if !strings.Contains(ex.Err.String(), `"msg":"refused a client: its key is not on the --allow list"`) || !strings.Contains(ex.Err.String(), `"client_key":"`+sk+`"`) {
		t.Fatalf("expose logged no refusal:\n%s", ex.Err)
	}

	fw, addr := proctest.Forward(t, bs, pub, "--key", strangerFile)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte("hello"))
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && strings.Contains(err.Error(), "timeout")) {
		t.Fatalf("local connection through a refused forward: %q, %v", b, err)
	}
	// The log line may follow the local connection's reset by a moment.
	fw.ErrLine("the service does not allow this client's key "+sk, 5*time.Second)
	// Idle, it does not redial (at most the one retry the closed
	// connection's wait asked for).
	time.Sleep(3 * time.Second)
	if n := fw.Out.Count(`"event":"redialing"`); n > 2 {
		t.Fatalf("%d redials with no local connection:\n%s", n, fw.Out)
	}
}

// TestAllowRefusalThroughRelay: a client that reaches the DHT through a
// dht-relay (custodial or not) and is refused gets the same line as over
// UDP, naming its key, rather than the relay's generic stream error.
func TestAllowRefusalThroughRelay(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	_, friend := proctest.WriteSeed(t, "friend.key")
	strangerFile, stranger := proctest.WriteSeed(t, "stranger.key")
	_, pub := proctest.Expose(t, bs, proctest.Echo(t), "--allow", friend.Public.String())
	port := proctest.FreeTCP(t)
	dr := proctest.Start(t, proctest.Env(t, bs), "--json", "dht-relay", "--host", "127.0.0.1", "--port", strconv.Itoa(port))
	url := proctest.JSON(t, dr.Line(`"event":"dht-relay"`, 60*time.Second))["address"].(string)
	sk := stranger.Public.String()
	want := "keytunnel: " + pub + " refused us: the service does not allow this client's key " + sk + "; its owner can add it with --allow " + sk + "\n"
	for _, nonCustodial := range []string{"", "1"} {
		env := append(proctest.Env(t, bs), "KEYTUNNEL_RELAY="+url, "KEYTUNNEL_RELAY_NONCUSTODIAL="+nonCustodial)
		out, stderr, err := runConnect(t, env, "should not arrive", "--key", strangerFile, pub)
		if err == nil || len(out) != 0 || stderr != want {
			t.Fatalf("stranger connect through the relay (non-custodial %q): %v, stdout %q\nstderr %q\nwant   %q", nonCustodial, err, out, stderr, want)
		}
	}
}

// TestUpRefusalNamesEntry: under up, a refusal's JSON event and log line
// name the [[expose]] entry that refused, as every other event does.
func TestUpRefusalNamesEntry(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	keyFile, kp := proctest.WriteSeed(t, "svc.key")
	_, friend := proctest.WriteSeed(t, "friend.key")
	strangerFile, stranger := proctest.WriteSeed(t, "stranger.key")
	cfg := filepath.Join(t.TempDir(), "keytunnel.toml")
	toml := fmt.Sprintf("[[expose]]\nname = \"web\"\naddress = %q\nkey = %q\nallow = [%q]\n", proctest.Echo(t), keyFile, friend.Public.String())
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	up := proctest.Start(t, proctest.Env(t, bs), "--json", "up", "-c", cfg)
	up.Line(`"event":"listening"`, 60*time.Second)
	if _, _, err := runConnect(t, proctest.Env(t, bs), "should not arrive", "--key", strangerFile, kp.Public.String()); err == nil {
		t.Fatal("a stranger's connect succeeded")
	}
	ev := proctest.JSON(t, up.Line(`"event":"refused"`, 10*time.Second))
	if ev["entry"] != "web" || ev["remote"] != stranger.Public.String() {
		t.Fatalf("refused event %v, want entry web and remote %s", ev, stranger.Public)
	}
	l := up.ErrLine("refused a client", time.Second)
	if !strings.Contains(l, `"entry":"web"`) {
		t.Fatalf("refusal log line names no entry: %s", l)
	}
}
