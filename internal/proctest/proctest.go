// Package proctest runs the keytunnel binary as separate processes for
// end-to-end tests outside cmd/keytunnel (examples/, bench/, the interop,
// ssh and backpressure tests), on loopback only: every process gets the
// KEYTUNNEL_BOOTSTRAP of a local testnet, never the public DHT, and a
// private HOME. Processes are stopped when the test ends.
package proctest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/natlab"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Main runs the tests and removes the binary Binary built.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// MainNoLeaks is Main that also fails a passing run when goroutines of
// this module, or whose stacks contain any of also, are still running 5 s
// after the tests.
func MainNoLeaks(m *testing.M, also ...string) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoLeak(5*time.Second, also); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	Cleanup()
	os.Exit(code)
}

// waitNoLeak waits up to d for the goroutines MainNoLeaks looks for to
// end, and returns the stacks of those still there.
func waitNoLeak(d time.Duration, also []string) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var ours []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			match := strings.Contains(g, "keytunnel/keytunnel/")
			for _, a := range also {
				match = match || strings.Contains(g, a)
			}
			if match && !strings.Contains(g, "TestMain") && !strings.Contains(g, "waitNoLeak") {
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

// Cleanup removes the binary Binary built, for a TestMain of its own.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Binary builds cmd/keytunnel once per test binary and returns its path;
// under -race (RaceEnabled) the binary is built with -race, so the
// processes' paths are race-checked too and a race they report fails the
// test (see StartCmd). It skips the test under -short.
func Binary(t testing.TB) string {
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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		args := []string{"build", "-o", binPath}
		if RaceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.CommandContext(ctx, gobin, append(args, "github.com/keytunnel/keytunnel/cmd/keytunnel")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Tool returns the path of a program a test drives (curl, ssh, ...). When
// it is missing the test is skipped, with hint (how to install it), except
// under CI (the CI environment variable set), where it fails: .ci/run
// installs everything the tests use.
func Tool(t testing.TB, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI must run this test (%s)", name, hint)
	}
	t.Skipf("%s is not installed (%s); skipped outside CI", name, hint)
	return ""
}

// Testnet starts an in-process loopback testnet of n nodes for the test
// and returns its bootstrap list (comma-separated host:port).
func Testnet(t testing.TB, n int) string {
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

// LabDHT starts a small public HyperDHT in a NAT lab: a bootstrap node
// and four persistent nodes on three public hosts, in this process. It
// returns the bootstrap address.
func LabDHT(t testing.TB, lab *natlab.Lab) string {
	t.Helper()
	bh := lab.Host(lab.Public())
	bc := bh.ListenUDP(0)
	baddr := bh.AddrPort(uint16(bc.LocalAddr().(*net.UDPAddr).Port))
	start := func(c *net.UDPConn, cfg dht.Config) *dht.Node {
		cfg.Conn = c
		n, err := dht.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	nodes := []*dht.Node{start(bc, dht.Config{Bootstrapper: baddr, Bootstrap: []string{}, Mode: rpc.Persistent, NotFirewalled: true})}
	for range 2 {
		h := lab.Host(lab.Public())
		for range 2 {
			nodes = append(nodes, start(h.ListenUDP(0), dht.Config{Bootstrap: []string{baddr.String()}, Mode: rpc.Persistent, NotFirewalled: true}))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return baddr.String()
}

// FirstPort is the port of the first node of a bootstrap list, for tools
// such as hypertele that take one bootstrap port on 127.0.0.1.
func FirstPort(t testing.TB, bootstrap string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.Split(bootstrap, ",")[0])
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Env returns a process environment with a private HOME, PATH and the
// bootstrap (when not empty).
func Env(t testing.TB, bootstrap string) []string {
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "PATH=" + os.Getenv("PATH")}
	if bootstrap != "" {
		env = append(env, dht.BootstrapEnv+"="+bootstrap)
	}
	return env
}

// Lines is a goroutine-safe buffer of a process's output.
type Lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// All returns the complete lines so far.
func (l *Lines) All() []string {
	s := l.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		return nil
	}
	return strings.Split(s, "\n")
}

// Count counts the lines containing sub.
func (l *Lines) Count(sub string) int {
	n := 0
	for _, x := range l.All() {
		if strings.Contains(x, sub) {
			n++
		}
	}
	return n
}

// Proc is a running process.
type Proc struct {
	t      testing.TB
	Name   string
	Cmd    *exec.Cmd
	Out    *Lines
	Err    *Lines
	exited chan struct{}
	werr   error
	// stopped: the test's cleanup had to stop it (it was still running).
	stopped bool
}

// Start runs the keytunnel binary with args and env; the test's cleanup
// stops it (SIGTERM, then SIGKILL after 10 s) and waits for it.
func Start(t testing.TB, env []string, args ...string) *Proc {
	t.Helper()
	CheckLoopbackOnly(t, env, args)
	return StartCmd(t, exec.Command(Binary(t), args...), env)
}

// StartCmd starts cmd (any program) with env as a Proc.
func StartCmd(t testing.TB, cmd *exec.Cmd, env []string) *Proc {
	t.Helper()
	p := &Proc{t: t, Name: strings.Join(cmd.Args, " "), Cmd: cmd, Out: &Lines{}, Err: &Lines{}, exited: make(chan struct{})}
	p.Cmd.Env = env
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Err
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.werr = p.Cmd.Wait()
		close(p.exited)
	}()
	track(t, p)
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.stopped = true
		}
		p.Stop()
		if strings.Contains(p.Err.String(), raceReport) {
			t.Errorf("%s: the race detector reported a data race", p.Name)
		}
		if t.Failed() {
			t.Logf("%s\nstdout:\n%s\nstderr:\n%s", p.Name, p.Out, p.Err)
		}
	})
	return p
}

// procs holds each test's processes, for the summary that ends a failed
// test's output.
var procs sync.Map // testing.TB → *procList

type procList struct {
	mu sync.Mutex
	ps []*Proc
}

// track adds p to t's list. The first process of a test registers the
// summary; cleanups run last-in first-out, so it runs after every
// process's own cleanup has stopped it and logged its output, and a CI
// log's tail (often all that is kept of a failure) says which process
// exited how, and what the race detector saw, instead of ending with the
// first process's log.
func track(t testing.TB, p *Proc) {
	v, loaded := procs.LoadOrStore(t, &procList{})
	l := v.(*procList)
	l.mu.Lock()
	l.ps = append(l.ps, p)
	l.mu.Unlock()
	if loaded {
		return
	}
	t.Cleanup(func() {
		procs.Delete(t)
		if !t.Failed() {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		var b strings.Builder
		b.WriteString("processes of the failed test (their output is above):")
		for _, p := range l.ps {
			fmt.Fprintf(&b, "\n  %s: %s", p.Name, p.fate())
		}
		for _, p := range l.ps {
			if r := raceExcerpt(p.Err.String()); r != "" {
				fmt.Fprintf(&b, "\n%s reported a data race:\n%s", p.Name, r)
			}
		}
		t.Log(b.String())
	})
}

// fate says how p ended; call it once p has exited.
func (p *Proc) fate() string {
	var ee *exec.ExitError
	switch {
	case p.stopped:
		return "still running at the end of the test, stopped (" + fmt.Sprint(p.werr) + ")"
	case p.werr == nil:
		return "exited 0"
	case errors.As(p.werr, &ee) && ee.ExitCode() == raceExitCode:
		return fmt.Sprintf("exited %d (the race detector's status: a data race)", raceExitCode)
	default:
		return p.werr.Error()
	}
}

// raceExitCode is the status a -race binary exits with after reporting a
// race (GORACE exitcode's default).
const raceExitCode = 66

// raceExcerpt is the first race report in stderr, cut to its first 40
// lines, or "".
func raceExcerpt(stderr string) string {
	i := strings.Index(stderr, raceReport)
	if i < 0 {
		return ""
	}
	lines := strings.SplitN(stderr[i:], "\n", 41)
	if len(lines) > 40 {
		lines = append(lines[:40], "...")
	}
	return strings.Join(lines, "\n")
}

// raceReport starts every report of the race detector (on stderr).
const raceReport = "WARNING: DATA RACE"

// RunBounded runs cmd with a time limit (it is killed after d) and
// returns its stdout. A race the race detector reports on its stderr is
// an error.
func RunBounded(cmd *exec.Cmd, d time.Duration) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	errs := &Lines{}
	if cmd.Stderr != nil {
		cmd.Stderr = io.MultiWriter(cmd.Stderr, errs)
	} else {
		cmd.Stderr = errs
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if strings.Contains(errs.String(), raceReport) {
			return out.Bytes(), fmt.Errorf("%v: the race detector reported a data race:\n%s", cmd.Args, errs)
		}
		return out.Bytes(), err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return out.Bytes(), fmt.Errorf("%v: still running after %v", cmd.Args, d)
	}
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Stop sends SIGTERM and waits (SIGKILL after 10 s).
func (p *Proc) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s: no exit 10 s after SIGTERM; killing", p.Name)
		p.Cmd.Process.Kill()
		<-p.exited
	}
}

// Wait waits up to d for the process to exit and returns its exit code.
func (p *Proc) Wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("%s: still running after %v\nstdout:\n%s\nstderr:\n%s", p.Name, d, p.Out, p.Err)
	}
	if r := raceExcerpt(p.Err.String()); r != "" {
		p.t.Fatalf("%s: the race detector reported a data race:\n%s", p.Name, r)
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

// First waits for the first stdout line.
func (p *Proc) First(d time.Duration) string { return p.Line("", d) }

// Line waits for a stdout line containing sub and returns it.
func (p *Proc) Line(sub string, d time.Duration) string {
	p.t.Helper()
	return p.waitLine(p.Out, "stdout", sub, d)
}

// LineOrExit waits up to d for a stdout line containing sub, as Line,
// but reports false instead of failing the test when the process exits
// first (a run that may fail and be tried again). It fails the test when
// d runs out.
func (p *Proc) LineOrExit(sub string, d time.Duration) (string, bool) {
	p.t.Helper()
	return p.findLine(p.Out, "stdout", sub, d)
}

// ErrLine waits for a stderr line containing sub and returns it.
func (p *Proc) ErrLine(sub string, d time.Duration) string {
	p.t.Helper()
	return p.waitLine(p.Err, "stderr", sub, d)
}

// waitLine waits for a line of buf (the process's stream named name)
// containing sub, failing the test when the process exits first or d
// runs out.
func (p *Proc) waitLine(buf *Lines, name, sub string, d time.Duration) string {
	p.t.Helper()
	l, ok := p.findLine(buf, name, sub, d)
	if !ok {
		p.t.Fatalf("%s exited (%v) before printing %q on %s\nstdout:\n%s\nstderr:\n%s", p.Name, p.werr, sub, name, p.Out, p.Err)
	}
	return l
}

// findLine waits for a line of buf containing sub: false when the process
// exits first; the test fails when d runs out.
func (p *Proc) findLine(buf *Lines, name, sub string, d time.Duration) (string, bool) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		// Whether it has exited is read before the lines: a process that
		// prints the line and exits between a scan and that check must not
		// count as one that exited without it. Once exited is closed, its
		// output is all in buf (Cmd.Wait waits for the copying).
		exited := false
		select {
		case <-p.exited:
			exited = true
		default:
		}
		for _, l := range buf.All() {
			if strings.Contains(l, sub) {
				return l, true
			}
		}
		if exited {
			return "", false
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no %s line with %q within %v\nstdout:\n%s\nstderr:\n%s", p.Name, name, sub, d, p.Out, p.Err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckLoopbackOnly fails the test when a keytunnel command that uses the
// DHT would run without a loopback bootstrap: tests must never reach the
// public DHT.
func CheckLoopbackOnly(t testing.TB, env, args []string) {
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
		case "expose", "forward", "connect", "ssh", "up", "node":
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

// JSON decodes one JSON object line.
func JSON(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not a JSON object: %q: %v", s, err)
	}
	return m
}

// Expose starts `keytunnel --json expose [args] target` and returns the
// process and the public key (hex) it announced.
func Expose(t testing.TB, bs, target string, args ...string) (*Proc, string) {
	t.Helper()
	p := Start(t, Env(t, bs), append(append([]string{"--json", "expose"}, args...), target)...)
	ev := JSON(t, p.Line("", 60*time.Second))
	pub, _ := ev["public_key"].(string)
	if ev["event"] != "listening" || len(pub) != 64 {
		t.Fatalf("first line of expose: %v", ev)
	}
	return p, pub
}

// Forward starts `keytunnel --json forward [args] pub 0` and returns the
// process and its local address.
func Forward(t testing.TB, bs, pub string, args ...string) (*Proc, string) {
	t.Helper()
	p := Start(t, Env(t, bs), append(append([]string{"--json", "forward"}, args...), pub, "0")...)
	ev := JSON(t, p.Line(`"event":"forwarding"`, 60*time.Second))
	return p, ev["listen"].(string)
}

// WriteSeed writes a new key pair's seed file in a temporary directory.
func WriteSeed(t testing.TB, name string) (string, key.KeyPair) {
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

// FreeTCP returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreeTCP(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Serve listens on 127.0.0.1, runs handle on each connection in its own
// goroutine (the connection is closed when handle returns), and returns
// the address. The test's cleanup closes the listener and waits for every
// handler.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ServeOn(t, ln, handle)
	return ln.Addr().String()
}

// ServeOn is Serve on a listener of the caller's (one inside a NAT-lab
// host, say), which it closes in the test's cleanup.
func ServeOn(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// Echo starts a TCP echo server on 127.0.0.1 (each connection echoes until
// the client half-closes) and returns its address.
func Echo(t testing.TB) string {
	t.Helper()
	return Serve(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
}

// EchoOnce sends msg through addr and checks that it comes back.
func EchoOnce(t testing.TB, addr, msg string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	RoundTrip(t, c, msg)
}

// RoundTrip sends msg on c, a connection to an echo service, and checks
// that it comes back, leaving c open.
func RoundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	defer c.SetDeadline(time.Time{})
	io.WriteString(c, msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through %s: %q, %v", c.RemoteAddr(), got, err)
	}
}

// ServeUDP answers each datagram to a socket on 127.0.0.1 with what reply
// returns for it and its sender (nothing for nil), until the test ends,
// and returns the socket.
func ServeUDP(t testing.TB, reply func(p []byte, from netip.AddrPort) []byte) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r := reply(buf[:n], from); r != nil {
				pc.WriteToUDPAddrPort(r, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc
}

// DialUDP returns a UDP socket on 127.0.0.1 connected to addr (a UDP
// forward's port, a UDP service), closed with the test.
func DialUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp4", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// HWM returns a process's peak resident set size (VmHWM) in bytes.
func HWM(pid int) (int64, error) {
	return statusKB(pid, "VmHWM:")
}

// RSS returns a process's resident set size (VmRSS) in bytes.
func RSS(pid int) (int64, error) {
	return statusKB(pid, "VmRSS:")
}

func statusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}
