package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// keytunnel to keytunnel in private mode, as processes: expose --private
// prints the string; forward takes it from a file with only a port as
// argument, or as `connect` from the environment; --secret-file - is
// refused where stdin is the tunnel; nothing logs the secret.
func TestE2EPrivateKeytunnel(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	echo := proctest.Echo(t)
	ex := proctest.Start(t, proctest.Env(t, bs), "--json", "expose", "--private", echo)
	ev := proctest.JSON(t, ex.First(60*time.Second))
	pub, _ := ev["public_key"].(string)
	str, _ := ev["connection"].(string)
	secret := strings.TrimPrefix(str, "hs://s000")
	if len(pub) != 64 || len(secret) != 64 || !strings.HasPrefix(str, "hs://s000") || ev["private"] != true {
		t.Fatalf("expose --private: %v", ev)
	}
	file := filepath.Join(t.TempDir(), "svc.secret")
	os.WriteFile(file, []byte(str+"\n"), 0o600)

	port := proctest.FreeTCP(t)
	fw := proctest.Start(t, proctest.Env(t, bs), "forward", "--secret-file", file, fmt.Sprint(port))
	fw.Line(fmt.Sprintf("forwarding 127.0.0.1:%d to %s", port, pub), 60*time.Second)
	proctest.EchoOnce(t, fmt.Sprintf("127.0.0.1:%d", port), "private hello")
	// The private string is holesail's, but expose's record says it is a
	// keytunnel expose: forward speaks one mux session, not raw streams.
	if l := ex.Line(`"event":"connected"`, 10*time.Second); !strings.Contains(l, `"mode":"mux"`) {
		t.Fatalf("forward of a keytunnel private string did not use mux: %s", l)
	}

	cmd := exec.Command(proctest.Binary(t), "connect", pub)
	cmd.Stdin = strings.NewReader("hello via connect")
	cn := proctest.StartCmd(t, cmd, append(proctest.Env(t, bs), "KEYTUNNEL_SECRET="+str))
	if code := cn.Wait(60 * time.Second); code != 0 || cn.Out.String() != "hello via connect" {
		t.Fatalf("connect with KEYTUNNEL_SECRET: exit %d, stdout %q", code, cn.Out.String())
	}

	bad := proctest.Start(t, proctest.Env(t, bs), "connect", "--secret-file", "-", pub)
	if code := bad.Wait(20 * time.Second); code != 1 || !strings.Contains(bad.Err.String(), "stdin, which is the tunnel") {
		t.Fatalf("connect --secret-file -: exit %d, %s", code, bad.Err)
	}
	for _, p := range []*proctest.Proc{ex, fw, cn, bad} {
		if strings.Contains(p.Err.String(), secret) {
			t.Fatalf("%s logged the secret", p.Name)
		}
	}
}
