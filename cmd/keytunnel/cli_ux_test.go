package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// runProc runs a short keytunnel command that needs no DHT and returns
// its exit code, stdout and stderr.
func runProc(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := proctest.Start(t, proctest.Env(t, ""), args...)
	code = p.Wait(30 * time.Second)
	return code, p.Out.String(), p.Err.String()
}

// TestVersion: `keytunnel version` and `--version` print the version, the
// commit and the Go version; a release build's -ldflags -X values win.
func TestVersion(t *testing.T) {
	want := "keytunnel devel\ncommit unknown\n" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errs := runProc(t, args...)
		// The test binary is built without VCS stamping or a module
		// version, so both are unknown.
		if code != 0 || errs != "" || !strings.HasPrefix(out, "keytunnel ") || !strings.HasSuffix(out, "\n"+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want like %q", args, code, out, errs, want)
		}
	}

	bin := filepath.Join(t.TempDir(), "keytunnel")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin,
		"-ldflags", "-X main.version=v1.2.3 -X main.commit=0123abc", "github.com/keytunnel/keytunnel/cmd/keytunnel")
	if out, err := proctest.RunBounded(build, 4*time.Minute); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := proctest.RunBounded(exec.Command(bin, "--version"), time.Minute)
	if want := "keytunnel v1.2.3\ncommit 0123abc\n" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"; err != nil || string(out) != want {
		t.Fatalf("release build: %v, %q, want %q", err, out, want)
	}
}
