package app

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

func TestExposeFirstLineIsKeyAndKeyIsSaved(t *testing.T) {
	fn := newFakeNet(t)
	echo := echoServer(t)
	env, out, _ := testEnv(t, fn)
	stop, _ := run(t, func(ctx context.Context) error {
		return Expose(ctx, env, ExposeOptions{Target: echo})
	})
	lines := out.waitLines(t, 2, 10*time.Second)
	k, err := key.ParsePublicKey(lines[0])
	if err != nil || lines[0] != k.String() {
		t.Fatalf("first line %q is not a hex public key", lines[0])
	}
	_, port, _ := net.SplitHostPort(echo)
	file := filepath.Join(env.KeyDir, "expose-"+port+".key")
	if !strings.Contains(lines[1], "new key saved in "+file) {
		t.Fatalf("second line %q does not say where the key is", lines[1])
	}
	saved, err := key.ReadSeedFile(file)
	if err != nil || saved.Public != k {
		t.Fatalf("saved key %v, %v; printed %s", saved.Public, err, k)
	}
	if err := stop(); err != nil {
		t.Fatalf("expose after cancel: %v", err)
	}

	// Run again: the same key, from the same file.
	env2, out2, _ := testEnv(t, fn)
	env2.KeyDir = env.KeyDir
	stop2, _ := run(t, func(ctx context.Context) error {
		return Expose(ctx, env2, ExposeOptions{Target: echo})
	})
	lines = out2.waitLines(t, 2, 10*time.Second)
	if lines[0] != k.String() || lines[1] != "key from "+file {
		t.Fatalf("second run printed %q", lines)
	}
	stop2()
}

// TestJSONEvents runs expose and forward over the fake network in JSON
// mode and checks that stdout is one JSON object per line, with the events
// a consumer needs.
func TestJSONEvents(t *testing.T) {
	fn := newFakeNet(t)
	echo := echoServer(t)
	envE, outE, errE := testEnv(t, fn)
	envE.JSON = true
	keyFile, kp := writeKey(t, t.TempDir(), "svc.key")
	stopE, _ := run(t, func(ctx context.Context) error {
		return Expose(ctx, envE, ExposeOptions{Target: echo, Key: KeyOptions{File: keyFile}})
	})
	first := decode(t, outE.waitLines(t, 1, 10*time.Second)[0])
	if first["event"] != EvListening || first["public_key"] != kp.Public.String() || first["key_file"] != keyFile || first["target"] != echo {
		t.Fatalf("first expose event: %v", first)
	}
	if _, ok := first["key_created"]; ok {
		t.Fatalf("key_created set for a given key: %v", first)
	}

	envF, outF, _ := testEnv(t, fn)
	envF.JSON = true
	stopF, _ := run(t, func(ctx context.Context) error {
		return Forward(ctx, envF, ForwardOptions{Remote: kp.Public.Z32(), Listen: "0"})
	})
	fwd := decode(t, outF.waitLine(t, `"forwarding"`, 10*time.Second))
	local, _ := fwd["listen"].(string)
	if fwd["remote"] != kp.Public.String() || !strings.HasPrefix(local, "127.0.0.1:") {
		t.Fatalf("forwarding event: %v", fwd)
	}
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "hello through the fake net")
	c.Close()
	decode(t, outF.waitLine(t, `"event":"connected"`, 10*time.Second))
	conn := decode(t, outE.waitLine(t, `"event":"connected"`, 10*time.Second))
	if conn["remote"] != fn.id.Public.String() || conn["mode"] != "mux" {
		t.Fatalf("expose connected event: %v", conn)
	}
	stopF()
	stopE()
	for _, b := range []*lineBuffer{outE, outF} {
		for _, l := range b.Lines() {
			ev := decode(t, l)
			if _, ok := ev["time"].(string); !ok || ev["event"] == "" {
				t.Fatalf("event without kind or time: %s", l)
			}
		}
	}
	// Logs are JSON on stderr too.
	for _, l := range errE.Lines() {
		ev := decode(t, l)
		if ev["msg"] == nil || ev["level"] == nil {
			t.Fatalf("log line %s", l)
		}
	}
}

func decode(t testing.TB, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not a JSON object: %q: %v", line, err)
	}
	return m
}

func TestForwardPortTaken(t *testing.T) {
	fn := newFakeNet(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	env, _, _ := testEnv(t, fn)
	kp, _ := key.Generate(nil)
	err = Forward(context.Background(), env, ForwardOptions{Remote: kp.Public.String(), Listen: taken.Addr().String()})
	if err == nil || err.Error() != taken.Addr().String()+" is already in use (another program listens there)" {
		t.Fatalf("err = %v", err)
	}
	if fn.opens.Load() != 0 {
		t.Fatal("network opened although the port was taken")
	}
	for _, o := range []ForwardOptions{
		{Remote: "nope", Listen: "0"},
		{Remote: kp.Public.String(), Listen: "99999"},
		{Remote: kp.Public.String(), Listen: "0", Key: KeyOptions{Seed: "12"}},
	} {
		if err := Forward(context.Background(), env, o); err == nil || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%+v: err = %v", o, err)
		}
	}
	if fn.opens.Load() != 0 {
		t.Fatal("network opened for bad arguments")
	}
}

func TestConnect(t *testing.T) {
	fn := newFakeNet(t)
	echo := echoServer(t)
	envE, outE, _ := testEnv(t, fn)
	allowed, _ := key.Generate(nil)
	stopE, _ := run(t, func(ctx context.Context) error {
		return Expose(ctx, envE, ExposeOptions{Target: echo, Key: KeyOptions{Seed: strings.Repeat("01", 32)}, Allow: []string{allowed.Public.String()}})
	})
	pub, _ := key.ParsePublicKey(outE.waitLines(t, 1, 10*time.Second)[0])
	defer stopE()

	t.Run("pipe", func(t *testing.T) {
		env, out, errb := testEnv(t, fn)
		env.JSON = true
		sin, sinW := io.Pipe()
		env.Stdin = sin
		stdout := &lineBuffer{}
		env.Stdout = stdout
		seed := allowed.Seed()
		done := make(chan error, 1)
		go func() {
			done <- Connect(context.Background(), env, ConnectOptions{Remote: pub.String(), Key: KeyOptions{Seed: hexOf(seed[:])}})
		}()
		io.WriteString(sinW, "ping\n")
		stdout.waitLine(t, "ping", 10*time.Second)
		sinW.Close() // EOF on stdin ends the session
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("connect did not end after stdin EOF")
		}
		if stdout.String() != "ping\n" {
			t.Fatalf("stdout carried %q: events must not go there", stdout.String())
		}
		// Events went to stderr as JSON.
		errb.waitLine(t, `"event":"connected"`, time.Second)
		_ = out
	})

	t.Run("refused by firewall", func(t *testing.T) {
		env, _, _ := testEnv(t, fn)
		err := Connect(context.Background(), env, ConnectOptions{Remote: pub.String()})
		if err == nil || !strings.HasPrefix(err.Error(), "cannot reach "+pub.String()+": ") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("err = %v", err)
		}
		if !errors.Is(err, errFirewalled) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		env, _, _ := testEnv(t, fn)
		nobody, _ := key.Generate(nil)
		err := Connect(context.Background(), env, ConnectOptions{Remote: nobody.Public.String()})
		if err == nil || err.Error() != "cannot reach "+nobody.Public.String()+": "+errPeerNotFound.Error() {
			t.Fatalf("err = %v", err)
		}
		env.PrintError(err)
	})
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestPrintErrorAndExitCode(t *testing.T) {
	env, out, errb := testEnv(t, nil)
	env.JSON = true
	if code := env.Fail(errors.New("first\nsecond")); code != 1 {
		t.Fatalf("code %d", code)
	}
	if errb.String() != "keytunnel: first\nkeytunnel: second\n" {
		t.Fatalf("stderr %q", errb.String())
	}
	if ev := decode(t, out.Lines()[0]); ev["event"] != "error" || ev["error"] != "first\nsecond" {
		t.Fatalf("event %v", ev)
	}
	if code := env.Fail(ExitError{Code: 7}); code != 7 || len(out.Lines()) != 1 {
		t.Fatalf("ExitError: code %d, output %q", code, out.String())
	}
	if env.Fail(nil) != 0 {
		t.Fatal("nil error fails")
	}
}

func TestSSH(t *testing.T) {
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "ssh")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + argsFile + "\nexit 3\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	keyFile, _ := writeKey(t, dir, "id key")
	env, _, _ := testEnv(t, nil)
	env.SSH = fake
	env.Self = "/opt/key tunnel/keytunnel"
	env.Bootstrap = []string{"127.0.0.1:4000", "127.0.0.1:4001"}
	o, err := ParseSSHArgs([]string{"--key", keyFile, "-p", "2222", "alice@0123"})
	if err != nil {
		t.Fatal(err)
	}
	err = SSH(context.Background(), env, o)
	if ExitCode(err) != 3 {
		t.Fatalf("err = %v, want ssh's exit status 3", err)
	}
	b, _ := os.ReadFile(argsFile)
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{
		"-o",
		"ProxyCommand='/opt/key tunnel/keytunnel' --bootstrap 127.0.0.1:4000,127.0.0.1:4001 connect --key '" + keyFile + "' %h",
		"-p", "2222", "alice@0123",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ssh got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	if err := SSH(context.Background(), env, SSHOptions{}); err == nil || !strings.Contains(err.Error(), "needs a destination") {
		t.Fatalf("no destination: %v", err)
	}
	if err := SSH(context.Background(), env, SSHOptions{Args: []string{"h"}, Key: KeyOptions{Seed: "xx"}}); err == nil || !strings.Contains(err.Error(), "--seed") {
		t.Fatalf("bad seed: %v", err)
	}
	env.SSH = filepath.Join(dir, "no-such-ssh")
	if err := SSH(context.Background(), env, SSHOptions{Args: []string{"h"}}); err == nil {
		t.Fatal("missing ssh accepted")
	}
	_ = strconv.Itoa
}
