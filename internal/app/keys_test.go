package app

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytunnel/keytunnel/internal/key"
)

func TestKeyOptions(t *testing.T) {
	dir := t.TempDir()
	good, kp := writeKey(t, dir, "good.key")
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI not a seed\n"), 0o600)
	seed := kp.Seed()
	hexSeed := strings.Repeat("ab", 32)

	for _, tc := range []struct {
		name string
		o    KeyOptions
		want string // error substring; "" for success
	}{
		{"none", KeyOptions{}, ""},
		{"file", KeyOptions{File: good}, ""},
		{"seed", KeyOptions{Seed: hexSeed}, ""},
		{"both", KeyOptions{File: good, Seed: hexSeed}, "not both"},
		{"short seed", KeyOptions{Seed: "abcd"}, "--seed: not a seed (want 64 hex characters)"},
		{"non-hex seed", KeyOptions{Seed: strings.Repeat("zz", 32)}, "--seed: not a seed"},
		{"missing file", KeyOptions{File: filepath.Join(dir, "nope.key")}, "no such file (`keytunnel keygen --out"},
		{"unknown format", KeyOptions{File: bad}, "not a seed file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := (&Env{Stderr: io.Discard}).loadKey(tc.o)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				switch tc.name {
				case "file":
					if got.Public != kp.Public {
						t.Fatal("wrong key from file")
					}
				case "seed":
					s, _ := key.ParseSeed(hexSeed)
					if got.Public != key.FromSeed(s).Public {
						t.Fatal("wrong key from seed")
					}
				case "none":
					if !got.Public.IsZero() {
						t.Fatal("key from nothing")
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
	_ = seed
}

func TestParsePublicKeyAndAddresses(t *testing.T) {
	kp, _ := key.Generate(nil)
	for _, s := range []string{kp.Public.String(), strings.ToUpper(kp.Public.String()), kp.Public.Z32()} {
		if k, err := parsePublicKey(s); err != nil || k != kp.Public {
			t.Fatalf("parse %q: %v", s, err)
		}
	}
	for _, s := range []string{"", "abc", kp.Public.String()[1:], "user@" + kp.Public.String()} {
		_, err := parsePublicKey(s)
		if err == nil || !strings.Contains(err.Error(), "is not a public key (want 64 hex or 52 z-base-32 characters)") {
			t.Fatalf("parse %q: err = %v", s, err)
		}
	}
	for in, want := range map[string]string{
		"8080":                  "127.0.0.1:8080",
		"10.0.0.5:22":           "10.0.0.5:22",
		":9000":                 "127.0.0.1:9000",
		"localhost:8080":        "localhost:8080",
		"unix:/run/app.sock":    "unix:/run/app.sock",
		"unix:/run/../app.sock": "unix:/app.sock",
	} {
		if got, err := address("target", in, false); err != nil || got != want {
			t.Fatalf("address(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, _ := address("target", "unix:app.sock", false); !strings.HasPrefix(got, "unix:/") || !strings.HasSuffix(got, "/app.sock") {
		t.Fatalf("a relative socket path is not made absolute: %q", got)
	}
	for _, in := range []string{"0", "70000", "host", "host:http", "-1", "unix:"} {
		if _, err := address("target", in, false); err == nil {
			t.Fatalf("address(%q) accepted", in)
		}
	}
	if got, err := address("listen address", "0", true); err != nil || got != "127.0.0.1:0" {
		t.Fatalf("port 0: %q %v", got, err)
	}
	if _, err := parseAllow([]string{kp.Public.String() + ", " + kp.Public.Z32(), "nope"}); err == nil || !strings.Contains(err.Error(), "--allow") {
		t.Fatalf("parseAllow: %v", err)
	}
	if got := SplitList([]string{"a:1, b:2", "", "c:3"}); strings.Join(got, " ") != "a:1 b:2 c:3" {
		t.Fatalf("SplitList = %q", got)
	}
	if a, b := fileSafe("unix:/run/a.sock"), fileSafe("unix:/run/b.sock"); a != "unix-run-a.sock" || a == b || a == fileSafe("8080") {
		t.Fatalf("key names of Unix socket targets: %q, %q", a, b)
	}
	if got := SplitList(nil); got == nil || len(got) != 0 {
		t.Fatalf("SplitList(nil) = %#v, want empty non-nil", got)
	}
}

func TestExposeKeyIsKeptPerTarget(t *testing.T) {
	env, _, _ := testEnv(t, nil)
	kp1, f1, created, err := env.exposeKey(KeyOptions{}, "127.0.0.1:8080", false)
	if err != nil || !created {
		t.Fatalf("first: created=%v err=%v", created, err)
	}
	if filepath.Base(f1) != "expose-8080.key" {
		t.Fatalf("file %s", f1)
	}
	if st, err := os.Stat(f1); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("stat %v %v", st, err)
	}
	kp2, f2, created, err := env.exposeKey(KeyOptions{}, "127.0.0.1:8080", false)
	if err != nil || created || f2 != f1 || kp2.Public != kp1.Public {
		t.Fatalf("second: %v %v %v", created, f2, err)
	}
	kp3, f3, _, err := env.exposeKey(KeyOptions{}, "10.0.0.5:8080", false)
	if err != nil || f3 == f1 || kp3.Public == kp1.Public || filepath.Base(f3) != "expose-10.0.0.5-8080.key" {
		t.Fatalf("other target: %s %v", f3, err)
	}
	kp4, f4, _, err := env.exposeKey(KeyOptions{}, "127.0.0.1:8080", true)
	if err != nil || kp4.Public == kp1.Public || filepath.Base(f4) != "expose-udp-8080.key" {
		t.Fatalf("udp service of the same port: %s %v", f4, err)
	}
	os.WriteFile(f1, []byte("garbage"), 0o600)
	if _, _, _, err := env.exposeKey(KeyOptions{}, "127.0.0.1:8080", false); err == nil || !strings.Contains(err.Error(), "not a seed file") {
		t.Fatalf("corrupt saved key: %v", err)
	}
}

func TestParseSSHArgs(t *testing.T) {
	o, err := ParseSSHArgs([]string{"--key", "id.key", "--raw", "-p", "2222", "user@host", "uptime"})
	if err != nil || o.Key.File != "id.key" || !o.Raw || strings.Join(o.Args, " ") != "-p 2222 user@host uptime" {
		t.Fatalf("%+v %v", o, err)
	}
	o, err = ParseSSHArgs([]string{"--seed=" + strings.Repeat("ab", 32), "--", "--raw", "h"})
	if err != nil || o.Key.Seed == "" || o.Raw || strings.Join(o.Args, " ") != "--raw h" {
		t.Fatalf("%+v %v", o, err)
	}
	if _, err := ParseSSHArgs([]string{"--key"}); err == nil {
		t.Fatal("--key without value accepted")
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/keytunnel":    "/usr/bin/keytunnel",
		"/tmp/a b/keytunnel":    "'/tmp/a b/keytunnel'",
		"/tmp/it's":             `'/tmp/it'\''s'`,
		"127.0.0.1:1,127.0.0.1": "127.0.0.1:1,127.0.0.1",
		"/tmp/100%":             "'/tmp/100%%'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
