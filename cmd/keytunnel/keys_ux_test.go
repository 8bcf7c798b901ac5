package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

func hexSeed(kp key.KeyPair) string {
	s := kp.Seed()
	return fmt.Sprintf("%x", s[:])
}

// startStdin starts keytunnel with args, env and stdin.
func startStdin(t *testing.T, env []string, stdin string, args ...string) *proctest.Proc {
	t.Helper()
	proctest.CheckLoopbackOnly(t, env, args)
	cmd := exec.Command(proctest.Binary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	return proctest.StartCmd(t, cmd, env)
}

// TestKeyShow: `keytunnel key show FILE` prints a key file's public key in
// hex and z32 (also from a seed on stdin, and as JSON), and an uppercase
// z32 key is accepted wherever a key is.
func TestKeyShow(t *testing.T) {
	file, kp := proctest.WriteSeed(t, "me.key")
	want := kp.Public.String() + "\nz32 " + kp.Public.Z32() + "\n"
	if code, out, errs := runProc(t, "key", "show", file); code != 0 || out != want || errs != "" {
		t.Errorf("key show: exit %d, stdout %q, stderr %q; want %q", code, out, errs, want)
	}
	p := startStdin(t, proctest.Env(t, ""), hexSeed(kp)+"\n", "key", "show", "-")
	if code := p.Wait(30 * time.Second); code != 0 || p.Out.String() != want {
		t.Errorf("key show -: exit %d, stdout %q; want %q", code, p.Out.String(), want)
	}
	_, out, _ := runProc(t, "--json", "key", "show", file)
	if ev := proctest.JSON(t, out); ev["public_key"] != kp.Public.String() || ev["public_key_z32"] != kp.Public.Z32() {
		t.Errorf("key show --json: %v", ev)
	}
	// forward parses the key before the listen address: an accepted key
	// gets as far as the address.
	for _, k := range []string{kp.Public.Z32(), strings.ToUpper(kp.Public.Z32()), strings.ToUpper(kp.Public.String())} {
		_, _, errs := runProc(t, "forward", k, "nowhere")
		if errs != "keytunnel: listen address \"nowhere\": want PORT, HOST:PORT or unix:PATH\n" {
			t.Errorf("forward %s: %q", k, errs)
		}
	}
	if code, _, errs := runProc(t, "key", "show", filepath.Join(t.TempDir(), "none.key")); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing file: exit %d, %q", code, errs)
	}
}

// TestKeyFilePermissions: a key file other users can read or write, or one
// in a directory any user can write, is refused with the chmod that fixes
// it; in a sticky directory (as /tmp) it loads.
func TestKeyFilePermissions(t *testing.T) {
	file, kp := proctest.WriteSeed(t, "me.key")
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"key", "show", file}, {"expose", "--key", file, "8080"}, {"forward", "--key", file, kp.Public.String(), "0"}} {
		what := file
		if args[0] != "key" {
			what = "--key " + file
		}
		want := "keytunnel: " + what + ": other users can read or write this key file (mode 0644); run chmod 600 " + file + "\n"
		if code, out, errs := runProc(t, args...); code != 1 || errs != want || out != "" {
			t.Errorf("%v: exit %d, stdout %q\nstderr %q\nwant   %q", args, code, out, errs, want)
		}
	}
	os.Chmod(file, 0o600)
	dir := filepath.Dir(file)
	os.Chmod(dir, 0o777)
	want := "keytunnel: " + file + ": any user can replace this key file: its directory has mode 0777; run chmod o-w " + dir + "\n"
	if code, _, errs := runProc(t, "key", "show", file); code != 1 || errs != want {
		t.Errorf("0777 directory: exit %d\nstderr %q\nwant   %q", code, errs, want)
	}
	os.Chmod(dir, 0o777|os.ModeSticky)
	if code, out, errs := runProc(t, "key", "show", file); code != 0 || !strings.HasPrefix(out, kp.Public.String()) {
		t.Errorf("sticky directory: exit %d, %q %q", code, out, errs)
	}
	os.Chmod(dir, 0o700)
}

// TestSeedOutOfArgv: a seed reaches keytunnel through KEYTUNNEL_SEED or
// --seed-file - (stdin) and works end to end (expose admits exactly the
// client whose uppercase z32 key it allows); --seed still works but
// warns; keytunnel ssh hands the seed to ProxyCommand in the environment,
// never on a command line.
func TestSeedOutOfArgv(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	_, srv := proctest.WriteSeed(t, "srv.key")
	_, cli := proctest.WriteSeed(t, "cli.key")
	echo := proctest.Echo(t)

	ex := startStdin(t, proctest.Env(t, bs), hexSeed(srv)+"\n", "--json", "expose", "--seed-file", "-", "--allow", strings.ToUpper(cli.Public.Z32()), echo)
	if ev := proctest.JSON(t, ex.First(60*time.Second)); ev["public_key"] != srv.Public.String() {
		t.Fatalf("expose --seed-file -: %v", ev)
	}
	connect := func(extraEnv ...string) (string, error) {
		out, _, err := runConnect(t, append(proctest.Env(t, bs), extraEnv...), "hello", strings.ToUpper(srv.Public.Z32()))
		return out, err
	}
	if out, err := connect("KEYTUNNEL_SEED=" + hexSeed(cli)); err != nil || out != "hello" {
		t.Fatalf("connect with KEYTUNNEL_SEED: %q, %v", out, err)
	}
	if out, err := connect(); err == nil || out != "" {
		t.Fatalf("connect without the allowed key: %q, %v", out, err)
	}

	// --seed warns (and forward then fails on a taken port, before the
	// network).
	taken := strings.TrimPrefix(proctest.Serve(t, func(net.Conn) {}), "127.0.0.1:")
	code, _, errs := runProc(t, "forward", "--seed", hexSeed(cli), kp(t).String(), taken)
	if code != 1 || !strings.Contains(errs, "--seed shows the secret seed to every user of this machine (ps); use --key FILE, --seed-file - or KEYTUNNEL_SEED instead") {
		t.Errorf("--seed: exit %d, stderr %q", code, errs)
	}

	// keytunnel ssh runs a stand-in ssh that records its arguments and
	// KEYTUNNEL_SEED.
	dir := t.TempDir()
	rec := filepath.Join(dir, "rec")
	os.WriteFile(filepath.Join(dir, "ssh"), []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > "+rec+"\necho \"seed=$KEYTUNNEL_SEED\" >> "+rec+"\n"), 0o755)
	env := append(proctest.Env(t, bs), "PATH="+dir+":"+os.Getenv("PATH"))
	for _, tc := range []struct {
		args  []string
		stdin string
	}{
		{[]string{"ssh", "--seed", hexSeed(cli), "user@" + srv.Public.String()}, ""},
		{[]string{"ssh", "--seed-file", "-", "user@" + srv.Public.String()}, hexSeed(cli) + "\n"},
	} {
		os.Remove(rec)
		p := startStdin(t, env, tc.stdin, tc.args...)
		if code := p.Wait(30 * time.Second); code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tc.args, code, p.Err.String())
		}
		b, _ := os.ReadFile(rec)
		got := string(b)
		argv, _, _ := strings.Cut(got, "seed=")
		if strings.Contains(argv, hexSeed(cli)) || !strings.Contains(argv, "ProxyCommand=") || !strings.HasSuffix(got, "seed="+hexSeed(cli)+"\n") {
			t.Errorf("%v: ssh got %q", tc.args, got)
		}
	}
}

func kp(t *testing.T) key.PublicKey {
	k, err := key.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public
}
