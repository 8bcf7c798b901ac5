package app

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/holesail"
	"github.com/keytunnel/keytunnel/internal/key"
)

func secretConn(t *testing.T) holesail.Conn {
	t.Helper()
	c, err := holesail.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func secretOf(c holesail.Conn) string { return strings.TrimPrefix(c.String(), "hs://s000") }

// TestRemote: every way forward, connect and ssh name a service.
func TestRemote(t *testing.T) {
	dir := t.TempDir()
	priv, other := secretConn(t), secretConn(t)
	file := filepath.Join(dir, "s.secret")
	if err := holesail.WriteSecretFile(file, priv); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.secret")
	os.WriteFile(open, []byte(priv.String()), 0o644)
	pub := key.FromSeed(key.Seed{3}).Public
	cases := []struct {
		name    string
		arg     string
		s       SecretOptions
		stdin   string
		want    key.PublicKey
		private bool
		err     string // substring; "" for success
		warn    bool   // the command-line warning
	}{
		{"hex key", pub.String(), SecretOptions{}, "", pub, false, "", false},
		{"z32 key", pub.Z32(), SecretOptions{}, "", pub, false, "", false},
		{"hs public", "hs://0000" + pub.Z32(), SecretOptions{}, "", pub, false, "", false},
		{"hs private on argv", priv.String(), SecretOptions{}, "", priv.PublicKey, true, "", true},
		{"bare secret with --private", secretOf(priv), SecretOptions{Private: true}, "", priv.PublicKey, true, "", true},
		{"file, no arg", "", SecretOptions{File: file}, "", priv.PublicKey, true, "", false},
		{"file, dash", "-", SecretOptions{File: file}, "", priv.PublicKey, true, "", false},
		{"file and its public key", priv.PublicKey.Z32(), SecretOptions{File: file}, "", priv.PublicKey, true, "", false},
		{"file for another key", pub.String(), SecretOptions{File: file}, "", key.PublicKey{}, false, "holds the string of service", false},
		{"file and argv string", priv.String(), SecretOptions{File: file}, "", key.PublicKey{}, false, "give the private connection string once", true},
		{"stdin", "", SecretOptions{File: "-"}, priv.String() + "\n", priv.PublicKey, true, "", false},
		{"env, no arg", "", SecretOptions{Env: priv.String()}, "", priv.PublicKey, true, "", false},
		{"env and its public key", priv.PublicKey.String(), SecretOptions{Env: priv.String()}, "", priv.PublicKey, true, "", false},
		{"env for another service", pub.String(), SecretOptions{Env: other.String()}, "", pub, false, "", false},
		{"env bare secret", "", SecretOptions{Env: secretOf(priv)}, "", priv.PublicKey, true, "", false},
		{"nothing", "", SecretOptions{}, "", key.PublicKey{}, false, "no service given", false},
		{"bad key", "short", SecretOptions{}, "", key.PublicKey{}, false, `"short" is not a public key (want 64 hex or 52 z-base-32 characters) or holesail`, false},
		{"bad hs", "hs://0000abc", SecretOptions{}, "", key.PublicKey{}, false, `"hs://0000abc": public hs:// string: not a public key`, false},
		{"bad env", "", SecretOptions{Env: "hs://0000" + pub.Z32()}, "", key.PublicKey{}, false, SecretEnvVar + ": hs://0000… is a public", false},
		{"missing file", "", SecretOptions{File: filepath.Join(dir, "nope")}, "", key.PublicKey{}, false, "no such file", false},
		{"open file", "", SecretOptions{File: open}, "", key.PublicKey{}, false, "chmod", false},
		{"empty stdin", "", SecretOptions{File: "-"}, "", key.PublicKey{}, false, "secret is empty", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, _, errb := testEnv(t, nil)
			env.Stdin = strings.NewReader(c.stdin)
			got, err := env.remote(c.arg, c.s)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
			} else if err != nil || got.PublicKey != c.want || got.Private != c.private {
				t.Fatalf("got %s private %v, %v; want %s private %v", got.PublicKey, got.Private, err, c.want, c.private)
			}
			if err == nil && got.Private && got.KeyPair.Public != got.PublicKey {
				t.Fatal("private remote without its key pair")
			}
			if w := strings.Contains(errb.String(), "shows its secret"); w != c.warn {
				t.Fatalf("warning %v, want %v: %s", w, c.warn, errb)
			}
			for _, s := range []string{secretOf(priv), secretOf(other)} {
				if strings.Contains(errb.String(), s) || (err != nil && strings.Contains(err.Error(), s)) {
					t.Fatalf("the secret shows: %v / %s", err, errb)
				}
			}
		})
	}
}

func TestDialIdentity(t *testing.T) {
	env, _, _ := testEnv(t, nil)
	priv := secretConn(t)
	kp, err := env.dialIdentity(priv, KeyOptions{SeedEnv: strings.Repeat("ab", 32)})
	if err != nil || kp.Public != priv.PublicKey {
		t.Fatalf("private identity %s, %v; want the string's key pair", kp.Public, err)
	}
	if _, err := env.dialIdentity(priv, KeyOptions{Seed: strings.Repeat("ab", 32)}); err == nil || !strings.Contains(err.Error(), "drop --key") {
		t.Fatalf("--seed with a private string: %v", err)
	}
}

func TestIsListenAddress(t *testing.T) {
	pub := key.FromSeed(key.Seed{3}).Public
	for s, want := range map[string]bool{
		"9000": true, "0": true, "127.0.0.1:9000": true, "[::1]:1": true,
		pub.String(): false, pub.Z32(): false, "hs://0000" + pub.Z32(): false, "x": false,
	} {
		if IsListenAddress(s) != want {
			t.Errorf("IsListenAddress(%q) = %v", s, !want)
		}
	}
}

// expose --private over the fake network: it prints the key and the
// private string, saves the string (0600) and serves it again on a
// restart, admits a forward holding the string and turns away one dialing
// with the public key alone.
func TestExposePrivate(t *testing.T) {
	fn := newFakeNet(t)
	echo := echoServer(t)
	env, out, errb := testEnv(t, fn)
	stop, _ := run(t, func(ctx context.Context) error {
		return Expose(ctx, env, ExposeOptions{Target: echo, Secret: SecretOptions{Private: true}})
	})
	lines := out.waitLines(t, 3, 10*time.Second)
	str, ok := strings.CutPrefix(lines[1], "private: ")
	c, err := holesail.Parse(str, false)
	if !ok || err != nil || !c.Private || lines[0] != c.PublicKey.String() {
		t.Fatalf("expose --private printed %q (%v)", lines, err)
	}
	if !strings.HasPrefix(lines[2], "new secret saved in ") {
		t.Fatalf("third line %q", lines[2])
	}
	file := strings.Fields(strings.TrimPrefix(lines[2], "new secret saved in "))[0]
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file %s: %v %v", file, st, err)
	}

	envF, outF, _ := testEnv(t, fn)
	run(t, func(ctx context.Context) error {
		return Forward(ctx, envF, ForwardOptions{Listen: "0", Secret: SecretOptions{Env: str}})
	})
	addr := strings.Fields(outF.waitLine(t, "forwarding", 10*time.Second))[1]
	roundTrip(t, dialAddr(t, addr), "private")

	envS, outS, errS := testEnv(t, fn)
	run(t, func(ctx context.Context) error {
		return Forward(ctx, envS, ForwardOptions{Remote: c.PublicKey.String(), Listen: "0"})
	})
	addr = strings.Fields(outS.waitLine(t, "forwarding", 10*time.Second))[1]
	s := dialAddr(t, addr)
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if n, _ := s.Read(make([]byte, 1)); n != 0 {
		t.Fatal("a forward without the secret got through")
	}
	errS.waitLine(t, "refused", 10*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(errb.String(), secretOf(c)) {
		t.Fatalf("expose logged the secret: %s", errb)
	}

	env2, out2, _ := testEnv(t, fn)
	env2.KeyDir = env.KeyDir
	run(t, func(ctx context.Context) error {
		return Expose(ctx, env2, ExposeOptions{Target: echo, Secret: SecretOptions{Private: true}})
	})
	lines = out2.waitLines(t, 3, 10*time.Second)
	if lines[1] != "private: "+str || lines[2] != "secret from "+file {
		t.Fatalf("restart printed %q, want the saved string", lines)
	}
}

func TestExposePrivateErrors(t *testing.T) {
	fn := newFakeNet(t)
	echo := echoServer(t)
	keyFile, _ := writeKey(t, t.TempDir(), "k.key")
	for _, c := range []struct {
		o    ExposeOptions
		want string
	}{
		{ExposeOptions{Target: echo, Key: KeyOptions{File: keyFile}, Secret: SecretOptions{Private: true}}, "drop --key"},
		{ExposeOptions{Target: echo, Secret: SecretOptions{File: keyFile}}, "it needs --private"},
		{ExposeOptions{Target: echo, Secret: SecretOptions{Private: true, Env: "hs://s000"}}, SecretEnvVar + ": private hs:// string: the secret is empty"},
		{ExposeOptions{Target: echo, Holesail: true}, "--holesail"},
	} {
		env, _, _ := testEnv(t, fn)
		err := Expose(context.Background(), env, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
}

func TestRecordAddresses(t *testing.T) {
	if r := recordFor("10.0.0.5:8080", false); r.Host != "127.0.0.1" || r.Port != 8080 || r.UDP {
		t.Fatalf("recordFor: %+v", r)
	}
	if r := recordFor("127.0.0.1:5353", true); r.Port != 5353 || !r.UDP || r.Keytunnel != muxRecord {
		t.Fatalf("recordFor a UDP target: %+v", r)
	}
	if a := recordListen(holesail.Record{Host: "0.0.0.0", Port: 22}); a != "127.0.0.1:22" {
		t.Fatalf("a record's host must not choose where a forward listens: %s", a)
	}
}

// fakeSSH writes an ssh that writes its arguments, one a line, then
// "env $KEYTUNNEL_SECRET", to out.
func fakeSSH(t *testing.T) (dir, fake, out string) {
	t.Helper()
	dir = t.TempDir()
	out = filepath.Join(dir, "out")
	fake = filepath.Join(dir, "ssh")
	script := "#!/bin/sh\n{ for a in \"$@\"; do printf '%s\\n' \"$a\"; done; printf 'env %s\\n' \"$" + SecretEnvVar + "\"; } > " + out + "\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, fake, out
}

// ssh hands a private string from --secret-file to ProxyCommand's connect
// in the environment, never on its command line.
func TestSSHSecretFile(t *testing.T) {
	dir, fake, out := fakeSSH(t)
	priv := secretConn(t)
	file := filepath.Join(dir, "s.secret")
	holesail.WriteSecretFile(file, priv)
	env, _, _ := testEnv(t, nil)
	env.SSH, env.Self = fake, "/bin/keytunnel"
	o, err := ParseSSHArgs([]string{"--secret-file", file, "alice@" + priv.PublicKey.Z32()})
	if err != nil || o.Secret.File != file {
		t.Fatalf("%+v %v", o, err)
	}
	if err := SSH(context.Background(), env, o); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if lines[len(lines)-1] != "env "+priv.String() {
		t.Fatalf("ssh's environment: %q", lines[len(lines)-1])
	}
	for _, l := range lines[:len(lines)-1] {
		if strings.Contains(l, secretOf(priv)) {
			t.Fatalf("the secret is on ssh's command line: %q", l)
		}
	}
}

func dialAddr(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The DHT network stores holesail records as holesail-server does: the
// same value again keeps its seq, a new one takes the next, and another
// node reads the latest.
func TestRecordsOnDHT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env, a, b := dhtPair(t, ctx)
	ra, ok := records(a)
	rb, ok2 := records(b)
	if !ok || !ok2 {
		t.Fatal("a DHT network has no records")
	}
	kp, _ := key.Generate(nil)
	if _, err := rb.GetRecord(ctx, kp.Public); !errors.Is(err, dht.ErrNotFound) {
		t.Fatalf("record before any put: %v", err)
	}
	if _, ok := env.lookupRecord(ctx, b, kp.Public); ok {
		t.Fatal("lookupRecord found a record that is not there")
	}
	v1, v2 := recordFor("127.0.0.1:8080", false).Marshal(), recordFor("127.0.0.1:8081", false).Marshal()
	for i, v := range [][]byte{v1, v1, v2} {
		if err := ra.PutRecord(ctx, kp, v); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		got, err := rb.GetRecord(ctx, kp.Public)
		if err != nil || string(got) != string(v) {
			t.Fatalf("after put %d: %q, %v; want %q", i, got, err, v)
		}
	}
	if r, ok := env.lookupRecord(ctx, b, kp.Public); !ok || r.Port != 8081 || recordListen(r) != "127.0.0.1:8081" {
		t.Fatalf("lookupRecord: %+v %v", r, ok)
	}
	// Not a holesail record: ignored with a warning.
	other, _ := key.Generate(nil)
	if err := ra.PutRecord(ctx, other, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, ok := env.lookupRecord(ctx, b, other.Public); ok {
		t.Fatal("lookupRecord took a value that is not a holesail record")
	}
}

// keytunnel ssh user@hs://…: ssh gets the public key as its host and
// ProxyCommand's connect --raw, a private string only in the environment.
func TestSSHHolesailDestination(t *testing.T) {
	_, fake, out := fakeSSH(t)
	priv := secretConn(t)
	pub := key.FromSeed(key.Seed{5}).Public
	for _, c := range []struct {
		args    []string
		host    string
		env     string
		warning bool
	}{
		{[]string{"-p", "22", "alice@" + priv.String(), "uptime"}, "alice@" + priv.PublicKey.Z32(), priv.String(), true},
		{[]string{"hs://0000" + pub.Z32()}, pub.Z32(), "", false},
	} {
		env, _, errb := testEnv(t, nil)
		env.SSH, env.Self = fake, "/bin/keytunnel"
		if err := SSH(context.Background(), env, SSHOptions{Args: c.args}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		got := string(b)
		if !strings.Contains(got, "connect --raw %h\n") || !strings.Contains(got, "\n"+c.host+"\n") || !strings.HasSuffix(got, "env "+c.env+"\n") {
			t.Fatalf("ssh %q ran with:\n%s", c.args, got)
		}
		if strings.Contains(strings.TrimSuffix(got, "env "+c.env+"\n"), secretOf(priv)) {
			t.Fatalf("the secret is on ssh's command line:\n%s", got)
		}
		if w := strings.Contains(errb.String(), "shows its secret"); w != c.warning {
			t.Fatalf("warning %v: %s", w, errb)
		}
	}
	env, _, _ := testEnv(t, nil)
	env.SSH = fake
	if err := SSH(context.Background(), env, SSHOptions{Args: []string{"bob@hs://0000short"}}); err == nil || !strings.Contains(err.Error(), "ssh destination") {
		t.Fatalf("bad holesail destination: %v", err)
	}
}
