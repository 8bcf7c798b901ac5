package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// Tests in this file run the keytunnel binary as separate processes, on
// loopback only: every process gets KEYTUNNEL_BOOTSTRAP of a local testnet
// (never the public nodes) and a private HOME.

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoLeak(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	proctest.Cleanup()
	os.Exit(code)
}

func waitNoLeak(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var ours []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if (strings.Contains(g, "keytunnel/keytunnel/") || strings.Contains(g, "os/exec.")) &&
				!strings.Contains(g, "TestMain") && !strings.Contains(g, "waitNoLeak") {
				ours = append(ours, g)
			}
		}
		if len(ours) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(ours, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// binary builds keytunnel once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the keytunnel binary; skipped with -short")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "keytunnel-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "keytunnel")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		out, err := exec.CommandContext(ctx, gobin, "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// lines is a goroutine-safe buffer of a process's output.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lines) all() []string {
	s := strings.TrimRight(l.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (l *lines) count(sub string) int {
	n := 0
	for _, x := range l.all() {
		if strings.Contains(x, sub) {
			n++
		}
	}
	return n
}

// proc is a running keytunnel process.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	out    *lines
	err    *lines
	exited chan struct{}
	werr   error
}

// env returns a process environment with a private HOME and bootstrap.
func procEnv(t *testing.T, bootstrap string) []string {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "PATH=" + os.Getenv("PATH")}
	if bootstrap != "" {
		env = append(env, dht.BootstrapEnv+"="+bootstrap)
	}
	return env
}

// start runs the binary with args; the test's cleanup stops it (SIGTERM,
// then SIGKILL after 10 s) and waits for it.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	checkLoopbackOnly(t, env, args)
	p := &proc{t: t, name: strings.Join(args, " "), out: &lines{}, err: &lines{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.err
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.werr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s\nstdout:\n%s\nstderr:\n%s", p.name, p.out, p.err)
		}
	})
	return p
}

// checkLoopbackOnly refuses to run a process whose bootstrap is not a
// loopback address: tests must never reach the public DHT.
func checkLoopbackOnly(t *testing.T, env, args []string) {
	t.Helper()
	bs := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, dht.BootstrapEnv+"="); ok {
			bs = v
		}
	}
	for i, a := range args {
		if a == "--bootstrap" && i+1 < len(args) {
			bs = args[i+1]
		}
	}
	needsDHT := false
	for _, a := range args {
		switch a {
		case "expose", "forward", "connect", "up", "node":
			needsDHT = true
		}
	}
	if !needsDHT {
		return
	}
	if bs == "" {
		t.Fatalf("%v: no bootstrap given; tests must not use the public DHT", args)
	}
	for _, b := range strings.Split(bs, ",") {
		host, _, err := net.SplitHostPort(b)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			t.Fatalf("%v: bootstrap %q is not loopback", args, b)
		}
	}
}

func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s: no exit 10 s after SIGTERM; killing", p.name)
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("%s: still running after %v\nstdout:\n%s\nstderr:\n%s", p.name, d, p.out, p.err)
	}
	var ee *exec.ExitError
	if errors.As(p.werr, &ee) {
		return ee.ExitCode()
	}
	if p.werr != nil {
		p.t.Fatal(p.werr)
	}
	return 0
}

// line waits for a stdout line containing sub.
func (p *proc) line(sub string, d time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, l := range p.out.all() {
			if strings.Contains(l, sub) {
				return l
			}
		}
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited (%v) before printing %q\nstdout:\n%s\nstderr:\n%s", p.name, p.werr, sub, p.out, p.err)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no line with %q within %v\nstdout:\n%s\nstderr:\n%s", p.name, sub, d, p.out, p.err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// first waits for the first stdout line.
func (p *proc) first(d time.Duration) string { return p.line("", d) }

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not a JSON object: %q: %v", s, err)
	}
	return m
}

// testnet starts an in-process loopback testnet for the test.
func testnet(t *testing.T, n int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tn, err := dht.Testnet(ctx, n, nil) // binds 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	return strings.Join(tn.Bootstrap, ",")
}

// joinable checks that a fresh node bootstrapping from bs alone joins.
func joinable(t *testing.T, bs string) {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	n, err := dht.New(dht.Config{Conn: udp, Bootstrap: strings.Split(bs, ",")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil || n.State().Nodes == 0 {
		t.Fatalf("a node bootstrapping from %s: %v, %d nodes", bs, err, n.State().Nodes)
	}
}

func writeSeed(t *testing.T, name string) (string, key.KeyPair) {
	t.Helper()
	kp, err := key.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := key.WriteSeedFile(p, kp.Seed()); err != nil {
		t.Fatal(err)
	}
	return p, kp
}

func freeTCP(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDP(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
