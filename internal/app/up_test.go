package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
)

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestUpRefusesInvalidConfig(t *testing.T) {
	fn := newFakeNet(t)
	dir := t.TempDir()
	writeKey(t, dir, "web.key")
	kp, _ := key.Generate(nil)
	good := freePort(t)
	cfg := filepath.Join(dir, "keytunnel.toml")
	writeFile(t, cfg, fmt.Sprintf(`
[[expose]]
name = "web"
port = 8080
key  = "web.key"

[[forward]]
name = "ok"
key  = %q
port = %d

[[forward]]
name = "bad"
key  = "not-a-key"
port = 70000
`, kp.Public, good))
	env, _, _ := testEnv(t, fn)
	err := Up(context.Background(), env, UpOptions{ConfigFile: cfg})
	if err == nil {
		t.Fatal("up started with an invalid entry")
	}
	msg := err.Error()
	for _, want := range []string{cfg + ":14: forward[1].key", cfg + ":15: forward[1].port"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not name %q", msg, want)
		}
	}
	if fn.opens.Load() != 0 {
		t.Fatal("the network was opened")
	}
	// The valid forward's port was never taken.
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", good))
	if err != nil {
		t.Fatalf("port of the valid entry: %v", err)
	}
	l.Close()

	for text, want := range map[string]string{
		"":                       "no [[expose]] or [[forward]] entries",
		"[[expose]]\nport = 1\n": ":1: expose[0]: needs key",
		"[[forward]\nport = 1\n": cfg + ":2: expected end of table array name",
		"[[forward]]\nport=1\nkey=\"" + kp.Public.String() + "\"\ncolor = \"red\"\n": "unknown field",
	} {
		writeFile(t, cfg, text)
		if err := Up(context.Background(), env, UpOptions{ConfigFile: cfg}); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("config %q: err = %v, want %q", text, err, want)
		}
	}
	if err := Up(context.Background(), env, UpOptions{ConfigFile: filepath.Join(dir, "missing.toml")}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
	if fn.opens.Load() != 0 {
		t.Fatal("the network was opened")
	}
}

func TestUpRefusesTakenPort(t *testing.T) {
	fn := newFakeNet(t)
	dir := t.TempDir()
	kp, _ := key.Generate(nil)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := freePort(t)
	cfg := filepath.Join(dir, "k.toml")
	writeFile(t, cfg, fmt.Sprintf(`
[[forward]]
name = "first"
key = %[1]q
port = %[2]d

[[forward]]
name = "second"
key = %[1]q
listen = %[3]q
`, kp.Public, free, taken.Addr()))
	env, _, _ := testEnv(t, fn)
	err = Up(context.Background(), env, UpOptions{ConfigFile: cfg})
	if err == nil || err.Error() != fmt.Sprintf("forward %q: %s is already in use (another program listens there)", "second", taken.Addr()) {
		t.Fatalf("err = %v", err)
	}
	if fn.opens.Load() != 0 {
		t.Fatal("the network was opened")
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", free))
	if err != nil {
		t.Fatalf("the first entry's port stayed bound: %v", err)
	}
	l.Close()
}

// upFixture runs `up` on the fake network with an expose "svc" of an echo
// server and forwards to it, and a reload channel.
type upFixture struct {
	t      *testing.T
	fn     *fakeNet
	env    *Env
	out    *lineBuffer
	cfg    string
	keyPub key.PublicKey
	reload chan struct{}
	stop   func() error
	done   <-chan error
	echo   string
}

func startUp(t *testing.T, forwards map[string]int, signal bool) *upFixture {
	f := &upFixture{t: t, fn: newFakeNet(t), reload: make(chan struct{})}
	dir := t.TempDir()
	_, kp := writeKey(t, dir, "svc.key")
	f.keyPub = kp.Public
	f.echo = echoServer(t)
	f.cfg = filepath.Join(dir, "keytunnel.toml")
	f.write(forwards)
	f.env, f.out, _ = testEnv(t, f.fn)
	f.env.JSON = true
	if !signal {
		f.env.Reload = f.reload
	}
	f.stop, f.done = run(t, func(ctx context.Context) error {
		return Up(ctx, f.env, UpOptions{ConfigFile: f.cfg})
	})
	f.out.waitLine(t, `"entry":"svc"`, 10*time.Second)
	for name := range forwards {
		f.out.waitLine(t, `"entry":"`+name+`"`, 10*time.Second)
	}
	return f
}

func (f *upFixture) write(forwards map[string]int) {
	var b strings.Builder
	fmt.Fprintf(&b, "[[expose]]\nname = \"svc\"\naddress = %q\nkey = \"svc.key\"\n", f.echo)
	for name, port := range forwards {
		fmt.Fprintf(&b, "\n[[forward]]\nname = %q\nkey = %q\nport = %d\n", name, f.keyPub, port)
	}
	writeFile(f.t, f.cfg, b.String())
}

// reloadAndWait triggers a reload and returns its event line.
func (f *upFixture) reloadAndWait(kind string) map[string]any {
	f.t.Helper()
	n := strings.Count(f.out.String(), `"event":"`+kind+`"`)
	if f.env.Reload != nil {
		select {
		case f.reload <- struct{}{}:
		case <-time.After(5 * time.Second):
			f.t.Fatal("up does not take reloads")
		}
	} else if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		f.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(f.out.String(), `"event":"`+kind+`"`) == n {
		if time.Now().After(deadline) {
			f.t.Fatalf("no %s event after the reload; output:\n%s", kind, f.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ls := f.out.Lines()
	for i := len(ls) - 1; i >= 0; i-- {
		if strings.Contains(ls[i], `"event":"`+kind+`"`) {
			return decode(f.t, ls[i])
		}
	}
	panic("unreachable")
}

func dialPort(t testing.TB, port int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatalf("port %d: %v", port, err)
	}
	return c
}

func portClosed(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func names(v any) string {
	var s []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			s = append(s, x.(string))
		}
	}
	return strings.Join(s, ",")
}

// TestUpReload: a reload starts added entries, stops removed ones and
// leaves the rest alone, with their connections and peer sessions.
func TestUpReload(t *testing.T) {
	pa, pb, pc := freePort(t), freePort(t), freePort(t)
	f := startUp(t, map[string]int{"a": pa, "b": pb}, false)

	ca := dialPort(t, pa)
	defer ca.Close()
	roundTrip(t, ca, "before reload")
	cb := dialPort(t, pb)
	defer cb.Close()
	roundTrip(t, cb, "b before reload")
	dials := f.fn.dials.Load() // one session per forward

	f.write(map[string]int{"a": pa, "c": pc})
	ev := f.reloadAndWait(EvReloaded)
	if names(ev["started"]) != "c" || names(ev["stopped"]) != "b" || !strings.Contains(names(ev["kept"]), "a") || !strings.Contains(names(ev["kept"]), "svc") {
		t.Fatalf("reloaded event %v", ev)
	}
	roundTrip(t, ca, "after reload, same connection")
	if !portClosed(pb) {
		t.Fatal("removed forward still listens")
	}
	cb.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := cb.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection of the removed forward still open")
	}
	cc := dialPort(t, pc)
	defer cc.Close()
	roundTrip(t, cc, "through the added forward")
	ca2 := dialPort(t, pa)
	roundTrip(t, ca2, "new connection through the kept forward")
	ca2.Close()
	if got := f.fn.dials.Load(); got != dials+1 {
		t.Fatalf("%d dials after the reload, want %d (only the new forward dials)", got, dials+1)
	}

	// An invalid file changes nothing.
	writeFile(t, f.cfg, "[[forward]]\nport = 1\n")
	ev = f.reloadAndWait(EvReloadErr)
	if !strings.Contains(ev["error"].(string), f.cfg+":1: forward[0]: needs key") {
		t.Fatalf("reload_failed event %v", ev)
	}
	roundTrip(t, ca, "after a failed reload")
	roundTrip(t, cc, "c after a failed reload")

	// A new entry on a taken port changes nothing either.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	f.write(map[string]int{"a": pa, "d": takenPort})
	ev = f.reloadAndWait(EvReloadErr)
	if !strings.Contains(ev["error"].(string), "is already in use") {
		t.Fatalf("reload_failed event %v", ev)
	}
	roundTrip(t, cc, "c survives a refused reload")

	// A changed entry restarts, and the port it frees goes to a new one.
	f.write(map[string]int{"a": pa, "c": pb, "e": pc})
	ev = f.reloadAndWait(EvReloaded)
	if names(ev["stopped"]) != "c" || !strings.Contains(names(ev["started"]), "c") || !strings.Contains(names(ev["started"]), "e") {
		t.Fatalf("reloaded event %v", ev)
	}
	for _, p := range []int{pb, pc} {
		c := dialPort(t, p)
		roundTrip(t, c, "after the change")
		c.Close()
	}
	roundTrip(t, ca, "a untouched throughout")

	if err := f.stop(); err != nil {
		t.Fatalf("up: %v", err)
	}
	for _, p := range []int{pa, pb, pc} {
		if !portClosed(p) {
			t.Fatalf("port %d open after up returned", p)
		}
	}
}

// TestUpSIGHUP drives the reload with a real SIGHUP to this process.
func TestUpSIGHUP(t *testing.T) {
	pa, pb := freePort(t), freePort(t)
	f := startUp(t, map[string]int{"a": pa}, true)
	ca := dialPort(t, pa)
	defer ca.Close()
	roundTrip(t, ca, "x")
	f.write(map[string]int{"a": pa, "b": pb})
	ev := f.reloadAndWait(EvReloaded)
	if names(ev["started"]) != "b" {
		t.Fatalf("reloaded %v", ev)
	}
	roundTrip(t, ca, "y")
	cb := dialPort(t, pb)
	roundTrip(t, cb, "z")
	cb.Close()
	f.stop()
}

func TestUpExposeListenFailureStartsNothing(t *testing.T) {
	fn := newFakeNet(t)
	dir := t.TempDir()
	_, kp := writeKey(t, dir, "svc.key")
	// Someone already listens on the key (another keytunnel).
	w, _ := fn.open(context.Background(), nil)
	defer w.Close()
	if _, err := w.Listen(context.Background(), kp, stack.ListenOptions{}); err != nil {
		t.Fatal(err)
	}
	free := freePort(t)
	cfg := filepath.Join(dir, "k.toml")
	writeFile(t, cfg, fmt.Sprintf("[[expose]]\nname=\"svc\"\nport=8080\nkey=\"svc.key\"\n\n[[forward]]\nkey=%q\nport=%d\n", kp.Public, free))
	env, out, _ := testEnv(t, fn)
	err := Up(context.Background(), env, UpOptions{ConfigFile: cfg})
	if err == nil || !strings.HasPrefix(err.Error(), `expose "svc": announcing `+kp.Public.String()) {
		t.Fatalf("err = %v", err)
	}
	if !portClosed(free) || out.String() != "" {
		t.Fatalf("something started: %q", out)
	}
}

// TestUpPerEntryRelay: an entry's relay_through replaces the top-level
// list for that entry only; an empty one turns the relay off; entries
// without one inherit (the network's list, which Up takes from the file
// unless --relay-through gave one).
func TestUpPerEntryRelay(t *testing.T) {
	fn := newFakeNet(t)
	dir := t.TempDir()
	_, kp1 := writeKey(t, dir, "one.key")
	_, kp2 := writeKey(t, dir, "two.key")
	r1, _ := key.Generate(nil)
	r2, _ := key.Generate(nil)
	echo := echoServer(t)
	pa, pb := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "keytunnel.toml")
	writeFile(t, cfg, fmt.Sprintf(`relay_through = [%q]

[[expose]]
name = "one"
address = %q
key = "one.key"
relay_through = [%q]

[[expose]]
name = "two"
address = %q
key = "two.key"

[[forward]]
name = "a"
key = %q
port = %d
relay_through = []

[[forward]]
name = "b"
key = %q
port = %d
`, r1.Public, echo, r2.Public, echo, kp1.Public, pa, kp2.Public, pb))
	env, out, _ := testEnv(t, fn)
	env.JSON = true
	env.Reload = make(chan struct{})
	stop, _ := run(t, func(ctx context.Context) error { return Up(ctx, env, UpOptions{ConfigFile: cfg}) })
	for _, name := range []string{"one", "two", "a", "b"} {
		out.waitLine(t, `"entry":"`+name+`"`, 10*time.Second)
	}
	for _, p := range []int{pa, pb} {
		c := dialPort(t, p)
		roundTrip(t, c, "through the forward")
		c.Close()
	}
	want := map[string]string{
		"listen " + kp1.Public.String(): relayName([]key.PublicKey{r2.Public}),
		"listen " + kp2.Public.String(): "inherit",
		"dial " + kp1.Public.String():   "[]",
		"dial " + kp2.Public.String():   "inherit",
	}
	for k, w := range want {
		op, pk, _ := strings.Cut(k, " ")
		parsed, _ := key.ParsePublicKey(pk)
		if got := fn.relayOf(op, parsed); got != w {
			t.Errorf("%s: relay %q, want %q", k, got, w)
		}
	}
	if len(env.RelayThrough) != 1 || env.RelayThrough[0] != r1.Public {
		t.Errorf("the network's relays %v, want the top-level %v", env.RelayThrough, r1.Public)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
