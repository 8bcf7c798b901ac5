package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// readmeBlocks returns the README's sh code blocks, in order.
func readmeBlocks(t *testing.T) (readme string, blocks []string) {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme = string(b)
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(readme, -1) {
		blocks = append(blocks, m[1])
	}
	return readme, blocks
}

// uncomment drops a shell line's trailing comment and prompt ("A$ ").
func uncomment(l string) string {
	if i := strings.Index(l, "  #"); i >= 0 {
		l = l[:i]
	}
	if i := strings.Index(l, "$ "); i >= 0 && i < 4 {
		l = l[i+2:]
	}
	return strings.TrimSpace(l)
}

// TestReadmeQuickStart: the README's first block installs keytunnel from a
// clone and runs the tests, in two copy-pasteable commands; running that
// install line (into a private GOBIN) gives a keytunnel that runs, and the
// user walkthrough comes before the developer material.
func TestReadmeQuickStart(t *testing.T) {
	proctest.Binary(t) // skips under -short
	readme, blocks := readmeBlocks(t)
	if len(blocks) == 0 || !strings.Contains(readme[:strings.Index(readme, "```sh")], "## Quick start") {
		t.Fatal("README does not start with a Quick start section holding a sh block")
	}
	var cmds []string
	for _, l := range strings.Split(blocks[0], "\n") {
		if l = uncomment(l); l != "" {
			cmds = append(cmds, l)
		}
	}
	want := []string{"go install ./cmd/keytunnel", "npm ci --prefix interop && go test -race ./..."}
	if strings.Join(cmds, "\n") != strings.Join(want, "\n") {
		t.Fatalf("quick start block: %q, want %q", cmds, want)
	}
	walk, dev := strings.Index(readme, "## Walkthrough"), strings.Index(readme, "## Layout")
	if walk < 0 || dev < 0 || walk > dev {
		t.Fatalf("walkthrough at %d, developer material (Layout) at %d", walk, dev)
	}

	gobin := t.TempDir()
	cmd := exec.Command("sh", "-c", cmds[0])
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "PATH="+filepath.Join(runtime.GOROOT(), "bin")+":"+os.Getenv("PATH"))
	if out, err := proctest.RunBounded(cmd, 4*time.Minute); err != nil {
		t.Fatalf("%s: %v\n%s", cmds[0], err, out)
	}
	out, err := proctest.RunBounded(exec.Command(filepath.Join(gobin, "keytunnel"), "help"), time.Minute)
	if err != nil || !strings.Contains(string(out), "expose") {
		t.Fatalf("installed keytunnel help: %v\n%s", err, out)
	}
}

// TestReadmeCommandsExist: every `keytunnel COMMAND` line in the README's
// sh blocks names a command the binary has.
func TestReadmeCommandsExist(t *testing.T) {
	bin := proctest.Binary(t)
	_, blocks := readmeBlocks(t)
	seen := map[string]bool{}
	for _, b := range blocks {
		for _, l := range strings.Split(b, "\n") {
			f := strings.Fields(uncomment(l))
			if len(f) < 2 || f[0] != "keytunnel" {
				continue
			}
			i := 1
			for i < len(f) && strings.HasPrefix(f[i], "-") { // global options and their values
				i += 2
			}
			if i >= len(f) || seen[f[i]] {
				continue
			}
			seen[f[i]] = true
			cmd := exec.Command(bin, "help", f[i])
			cmd.Env = proctest.Env(t, "")
			if out, err := proctest.RunBounded(cmd, time.Minute); err != nil {
				t.Errorf("README line %q: keytunnel help %s: %v\n%s", l, f[i], err, out)
			}
		}
	}
	if len(seen) < 8 {
		t.Fatalf("only %d commands found in the README: %v", len(seen), seen)
	}
}
