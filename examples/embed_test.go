package examples_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestEmbed builds examples/embed, a module of its own that imports only
// github.com/keytunnel/keytunnel (through a replace directive, as a
// program outside this module would), and runs it on a testnet: it
// listens on a key and echoes 1 MiB to itself through a Dial. Then the
// keytunnel binary's forward reaches the same Listen and 1 MiB echoes
// through that too.
func TestEmbed(t *testing.T) {
	proctest.Binary(t) // skips under -short, like the other process tests
	bin := filepath.Join(t.TempDir(), "embed")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	// No -mod=mod: the example's go.sum must already name every module it
	// needs, as a user's would.
	build := exec.Command(gobin, "build", "-buildvcs=false", "-o", bin, ".")
	build.Dir = "embed"
	build.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	build.Stderr = &stderr
	if _, err := proctest.RunBounded(build, 3*time.Minute); err != nil {
		t.Fatalf("building examples/embed: %v\n%s", err, stderr.String())
	}

	bs := proctest.Testnet(t, 3)
	cmd := exec.Command(bin, "-bootstrap", bs)
	stdin, err := cmd.StdinPipe() // the program serves until stdin closes
	if err != nil {
		t.Fatal(err)
	}
	p := proctest.StartCmd(t, cmd, proctest.Env(t, ""))
	pub := strings.TrimPrefix(p.Line("listening ", 60*time.Second), "listening ")
	if len(pub) != 64 {
		t.Fatalf("embed printed key %q", pub)
	}
	if got := p.Line("echoed", 60*time.Second); got != "echoed 1048576 bytes intact" {
		t.Fatalf("embed's self-check: %q", got)
	}

	fwd, local := proctest.Forward(t, bs, pub)
	defer fwd.Stop()
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("1 MiB through keytunnel forward to embed's Listen: got %d bytes (intact %v), %v", len(got), bytes.Equal(got, msg), err)
	}
	if p.Err.Count("connection from") < 2 {
		t.Fatalf("embed's Listen saw %d connections, want 2 (its own dial, the forward's)\n%s", p.Err.Count("connection from"), p.Err)
	}

	stdin.Close()
	if code := p.Wait(30 * time.Second); code != 0 {
		t.Fatalf("embed exited %d after stdin closed\n%s", code, p.Err)
	}
}
