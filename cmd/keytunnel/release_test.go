package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestReleaseStampsVersion runs the release build (.ci/release) for
// linux/amd64 only and checks its artifact: SHA256SUMS names the archive
// with its digest, and the binary inside prints the stamped version and
// the checkout's commit.
func TestReleaseStampsVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a release archive; skipped with -short")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("runs the linux/amd64 artifact")
	}
	gitPath := proctest.Tool(t, "git", "apt-get install git")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	head := exec.Command(gitPath, "rev-parse", "HEAD")
	head.Dir = root
	commit, err := head.Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v (the test needs a git checkout)", err)
	}
	out := t.TempDir()
	const version = "v9.8.7-test"
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "run", "./.ci/release",
		"-targets", "linux/amd64", "-version", version, "-out", out)
	cmd.Dir = root
	if b, err := proctest.RunBounded(cmd, 5*time.Minute); err != nil {
		t.Fatalf("release: %v\n%s", err, b)
	}

	name := "keytunnel_9.8.7-test_linux_amd64.tar.gz"
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	archive, err := os.ReadFile(filepath.Join(out, name))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(archive)
	if want := hex.EncodeToString(sum[:]) + "  " + name + "\n"; string(sums) != want {
		t.Fatalf("SHA256SUMS = %q, want %q", sums, want)
	}

	bin := filepath.Join(t.TempDir(), "keytunnel")
	gz, err := gzip.NewReader(strings.NewReader(string(archive)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "keytunnel_9.8.7-test_linux_amd64/keytunnel" {
			if h.Mode&0o111 == 0 {
				t.Errorf("binary mode %o is not executable", h.Mode)
			}
			data, _ := io.ReadAll(tr)
			os.WriteFile(bin, data, 0o755)
		}
	}
	if strings.Join(names, " ") != "keytunnel_9.8.7-test_linux_amd64/keytunnel keytunnel_9.8.7-test_linux_amd64/README.md" {
		t.Fatalf("archive holds %v", names)
	}
	got, err := proctest.RunBounded(exec.Command(bin, "version"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := "keytunnel " + version + "\ncommit " + strings.TrimSpace(string(commit)) + "\n"
	if !strings.HasPrefix(string(got), want) || !strings.HasSuffix(string(got), " linux/amd64\n") {
		t.Fatalf("version printed %q, want %q... linux/amd64", got, want)
	}
}
