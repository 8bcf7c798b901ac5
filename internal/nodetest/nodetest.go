package nodetest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Dir returns the absolute path of the repository's interop/ directory,
// found by walking up from the working directory to go.mod.
func Dir(t testing.TB) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "interop")
		}
		p := filepath.Dir(d)
		if p == d {
			t.Fatalf("nodetest: no go.mod above the working directory")
		}
		d = p
	}
}

// Require skips (outside CI) or fails (in CI) the test when the Node
// reference cannot run here, and returns the interop directory.
func Require(t testing.TB) string {
	t.Helper()
	dir := Dir(t)
	why := ""
	if _, err := exec.LookPath("node"); err != nil {
		why = "node is not on PATH"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "hyperdht")); err != nil {
		why = "interop/node_modules is missing (run: npm ci --prefix interop)"
	}
	if why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("interop test cannot run in CI: %s", why)
		}
		t.Skipf("interop test skipped outside CI: %s", why)
	}
	return dir
}

// Proc is a running Node script.
type Proc struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	err   error // valid after done is closed

	mu     sync.Mutex
	stderr strings.Builder
}

// Start runs `node interop/<script> args...` with interop/ as the working
// directory. Its standard output is read line by line (Line, Expect); its
// standard error is kept and shown when the test fails. The process group is
// killed when the test ends.
func Start(t testing.TB, script string, args ...string) *Proc {
	t.Helper()
	return StartIn(t, nil, script, args...)
}

// StartIn is Start with an argv prefix in front of node, such as
// natlab's Host.ExecPrefix ("ip netns exec <ns>") to run it inside a
// network namespace.
func StartIn(t testing.TB, prefix []string, script string, args ...string) *Proc {
	t.Helper()
	dir := Require(t)
	argv := append(append(append([]string(nil), prefix...), "node", filepath.Join(dir, script)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = os.Environ()
	p := &Proc{t: t, name: script, cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("nodetest: starting %s: %v", script, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 16<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	go func() {
		defer wg.Done()
		b := make([]byte, 4096)
		for {
			n, err := stderr.Read(b)
			p.mu.Lock()
			if p.stderr.Len() < 1<<20 {
				p.stderr.Write(b[:n])
			}
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", script, p.Stderr())
		}
	})
	return p
}

// Pid is the node process's id (for /proc/<pid>/status).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stdin is the script's standard input.
func (p *Proc) Stdin() io.WriteCloser { return p.stdin }

// Stderr returns what the script has written to standard error so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Line returns the next line of standard output, or an error when the
// script exits first or ctx ends.
func (p *Proc) Line(ctx context.Context) (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			return "", fmt.Errorf("nodetest: %s exited (%v) before printing a line; stderr:\n%s", p.name, p.err, p.Stderr())
		}
		return l, nil
	case <-ctx.Done():
		return "", fmt.Errorf("nodetest: waiting for a line from %s: %w; stderr:\n%s", p.name, ctx.Err(), p.Stderr())
	}
}

// Expect reads lines until one starts with prefix and returns the rest of
// that line, trimmed. It fails the test after timeout.
func (p *Proc) Expect(prefix string, timeout time.Duration) string {
	p.t.Helper()
	return strings.TrimSpace(strings.TrimPrefix(p.ExpectAny(timeout, prefix), prefix))
}

// ExpectAny reads lines until one starts with one of prefixes and returns
// that line whole (the caller tells which). It fails the test after
// timeout.
func (p *Proc) ExpectAny(timeout time.Duration, prefixes ...string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		l, err := p.Line(ctx)
		if err != nil {
			p.t.Fatalf("expecting one of %q: %v", prefixes, err)
		}
		for _, prefix := range prefixes {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
	}
}

// ExpectAll reads lines until, for each prefix, one has started with it,
// in whatever order the script printed them (two sides of a transfer end
// in either order), and returns the rest of each line, trimmed, by prefix.
// It fails the test after timeout.
func (p *Proc) ExpectAll(timeout time.Duration, prefixes ...string) map[string]string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	got := make(map[string]string, len(prefixes))
	for len(got) < len(prefixes) {
		l, err := p.Line(ctx)
		if err != nil {
			p.t.Fatalf("expecting %q (have %q): %v", prefixes, got, err)
		}
		for _, prefix := range prefixes {
			if _, seen := got[prefix]; seen {
				continue
			}
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				got[prefix] = strings.TrimSpace(rest)
				break
			}
		}
	}
	return got
}

// Wait waits for the script to exit by itself and returns its exit error.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop asks the script to end (SIGTERM, which lets a DHT node leave the
// network as it would for a user), and kills it if it has not within 5 s.
func (p *Proc) Stop() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.Kill()
	}
}

// Kill ends the script and every process it started, and waits for it.
func (p *Proc) Kill() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Errorf("nodetest: %s did not exit after SIGKILL", p.name)
	}
}
