package examples_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// TestKeytunnelToml runs examples/keytunnel.toml with `keytunnel up` on a
// loopback testnet. The test puts its own services behind the example's
// ports and keys (the only edits: the ports, alice's allowed key, the
// forward's key and a bootstrap line), then checks each entry: the web
// expose serves HTTP, the ssh expose admits alice and refuses a stranger,
// and the db forward reaches a service exposed elsewhere.
func TestKeytunnelToml(t *testing.T) {
	src, err := os.ReadFile("keytunnel.toml")
	if err != nil {
		t.Fatal(err)
	}
	bs := proctest.Testnet(t, 4)
	dir := t.TempDir()

	// web: an HTTP server.
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "web says hi")
	})}
	go srv.Serve(web)
	t.Cleanup(func() { srv.Close() })
	// ssh: an echo service stands in for sshd.
	sshd := proctest.Echo(t)
	// db: a service exposed by another keytunnel.
	_, db := proctest.Expose(t, bs, proctest.Echo(t))
	dbPort := proctest.FreeTCP(t)
	aliceFile, alice := proctest.WriteSeed(t, "alice.key")
	strangerFile, _ := proctest.WriteSeed(t, "stranger.key")

	cfg := string(src)
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	for old, new := range map[string]string{
		"port = 8080": "port = " + port(web.Addr().String()),
		"port  = 22":  "port  = " + port(sshd),
		"port = 5432": fmt.Sprintf("port = %d", dbPort),
		"6b79c57e6a095239282c04818e96112f3f03a4001ba97a564c23852a3f1ea5fc": alice.Public.String(),
		"cecc1507dc1ddd7295951c290888f095adb9044d1b73d696e6df065d683bd4fc": db,
		"# bootstrap = [\"127.0.0.1:49737\"]":                              fmt.Sprintf("bootstrap = [%q]", strings.Split(bs, ",")[0]),
	} {
		if strings.Count(cfg, old) != 1 {
			t.Fatalf("keytunnel.toml no longer has %q once", old)
		}
		cfg = strings.Replace(cfg, old, new, 1)
	}
	webKey, webKP := proctest.WriteSeed(t, "web.key")
	sshKey, sshKP := proctest.WriteSeed(t, "ssh.key")
	for name, from := range map[string]string{"web.key": webKey, "ssh.key": sshKey} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "keytunnel.toml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	up := proctest.Start(t, proctest.Env(t, bs), "--json", "up", "-c", file)
	for _, e := range []struct{ entry, pub string }{{"web", webKP.Public.String()}, {"ssh", sshKP.Public.String()}} {
		ev := proctest.JSON(t, up.Line(`"entry":"`+e.entry+`"`, 60*time.Second))
		if ev["event"] != "listening" || ev["public_key"] != e.pub {
			t.Fatalf("%s: %v", e.entry, ev)
		}
	}
	up.Line(`"entry":"db"`, 30*time.Second)

	// web, through a forward of its own.
	_, local := proctest.Forward(t, bs, webKP.Public.String())
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Get("http://" + local + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "web says hi" {
		t.Fatalf("web: %q", b)
	}
	// ssh: alice gets through, a stranger does not.
	_, local = proctest.Forward(t, bs, sshKP.Public.String(), "--key", aliceFile)
	proctest.EchoOnce(t, local, "alice is in")
	fw, local := proctest.Forward(t, bs, sshKP.Public.String(), "--key", strangerFile)
	sc, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.Write([]byte("knock"))
	fw.Line(`"event":"redialing"`, 45*time.Second)
	// db: up's forward reaches the other machine's service.
	proctest.EchoOnce(t, fmt.Sprintf("127.0.0.1:%d", dbPort), "db through up")
}
