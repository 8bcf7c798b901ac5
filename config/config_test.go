package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytunnel/keytunnel/internal/key"
)

func writeKey(t *testing.T, dir, name string) key.KeyPair {
	t.Helper()
	kp, err := key.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := key.WriteSeedFile(filepath.Join(dir, name), kp.Seed()); err != nil {
		t.Fatal(err)
	}
	return kp
}

func writeConf(t *testing.T, dir, text string) string {
	t.Helper()
	p := filepath.Join(dir, "keytunnel.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadValid(t *testing.T) {
	dir := t.TempDir()
	web := writeKey(t, dir, "web.key")
	peer := key.FromSeed(key.Seed{9}).Public
	p := writeConf(t, dir, `
bootstrap = ["127.0.0.1:49737", "[::1]:10001"]
log_level = "debug"

[[expose]]
name = "web"
port = 8080
key = "web.key"
allow = ["`+peer.String()+`", "`+peer.Z32()+`"]

[[expose]]
address = "10.0.0.5:22"
key = "`+filepath.Join(dir, "web.key")+`"
raw = true
replace = true

[[forward]]
name = "db"
key = "`+web.Public.Z32()+`"
listen = "127.0.0.1:5432"

[[forward]]
key = "`+web.Public.String()+`"
port = 9000
raw = true
`)
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Bootstrap) != 2 || f.LogLevel.String() != "DEBUG" {
		t.Errorf("globals: %+v", f)
	}
	if len(f.Expose) != 2 || len(f.Forward) != 2 {
		t.Fatalf("entries: %d expose, %d forward", len(f.Expose), len(f.Forward))
	}
	e := f.Expose[0]
	if e.Name != "web" || e.Target != "127.0.0.1:8080" || e.KeyPair.Public != web.Public ||
		e.KeyFile != filepath.Join(dir, "web.key") || len(e.Allow) != 2 || e.Allow[0] != peer || e.Allow[1] != peer || e.Raw || e.Replace {
		t.Errorf("expose[0] = %+v", e)
	}
	if e := f.Expose[1]; e.Target != "10.0.0.5:22" || !e.Raw || !e.Replace || e.Name != "expose-10.0.0.5:22" {
		t.Errorf("expose[1] = %+v", e)
	}
	if fw := f.Forward[0]; fw.Name != "db" || fw.Key != web.Public || fw.Listen != "127.0.0.1:5432" || fw.Raw {
		t.Errorf("forward[0] = %+v", fw)
	}
	if fw := f.Forward[1]; fw.Name != "forward-127.0.0.1:9000" || fw.Listen != "127.0.0.1:9000" || !fw.Raw {
		t.Errorf("forward[1] = %+v", fw)
	}
}

// TestErrors checks that each problem is reported with its line and field,
// that all problems are reported at once, and that no File comes back.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, "ok.key")
	os.WriteFile(filepath.Join(dir, "bad.key"), []byte("nope\n"), 0o600)
	good := key.FromSeed(key.Seed{1}).Public.String()
	p := writeConf(t, dir, `log_level = "loud"
bootstrap = ["nohostport"]

[[expose]]
name = "a"
port = 70000
key = "ok.key"

[[expose]]
name = "a"
port = 80
key = "missing.key"
colour = "red"

[[expose]]
address = "x"
key = "bad.key"
allow = ["deadbeef"]

[[forward]]
key = "zz"
port = 1

[[forward]]
key = "`+good+`"

[[forward]]
key = "`+good+`"
listen = "127.0.0.1:1"
`)
	f, err := Load(p)
	if f != nil {
		t.Fatal("a File came back with errors")
	}
	var es Errors
	if !errors.As(err, &es) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	want := []struct {
		line  int
		field string
		msg   string
	}{
		{1, "log_level", "loud"},
		{2, "bootstrap[0]", "host:port"},
		{6, "expose[0].port", "70000"},
		{10, "expose[1].name", "already used"},
		{12, "expose[1].key", "missing.key"},
		{13, "expose.colour", "unknown field"},
		{16, "expose[2].address", `"x"`},
		{17, "expose[2].key", "bad.key"},
		{18, "expose[2].allow[0]", "not a public key"},
		{21, "forward[0].key", "not a public key"},
		{24, "forward[1]", "needs listen or port"},
		{29, "forward[2].listen", "already the listen address"},
	}
	if len(es) != len(want) {
		t.Errorf("%d errors, want %d:\n%v", len(es), len(want), err)
	}
	for _, w := range want {
		found := false
		for _, e := range es {
			if e.Line == w.line && e.Field == w.field && strings.Contains(e.Msg, w.msg) && e.File == p {
				found = true
			}
		}
		if !found {
			t.Errorf("no error at line %d field %s containing %q; got:\n%v", w.line, w.field, w.msg, err)
		}
	}
	if !strings.Contains(err.Error(), p+":6: expose[0].port: ") {
		t.Errorf("message does not name file:line: field:\n%v", err)
	}
}

func TestSyntaxError(t *testing.T) {
	_, err := Parse("x.toml", []byte("a = 1\n[[expose]\nport = 1\n"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Line < 2 {
		t.Fatalf("err = %#v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := Parse("x.toml", []byte("[[expose]]\nport = \"80\"\nkey = \"k\"\n")); err == nil {
		t.Fatal("string port accepted")
	}
}

func TestDiff(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, "a.key")
	writeKey(t, dir, "b.key")
	k := key.FromSeed(key.Seed{3}).Public.String()
	parse := func(text string) *File {
		t.Helper()
		f, err := Parse(filepath.Join(dir, "c.toml"), []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	old := parse(`
[[expose]]
name = "keep"
port = 1
key = "a.key"
[[expose]]
name = "change"
port = 2
key = "a.key"
[[expose]]
name = "gone"
port = 3
key = "a.key"
[[forward]]
name = "fkeep"
key = "` + k + `"
port = 10
[[forward]]
name = "fgone"
key = "` + k + `"
port = 11
`)
	cur := parse(`
[[expose]]
name = "keep"
port = 1
key = "a.key"
[[expose]]
name = "change"
port = 2
key = "b.key"
[[expose]]
name = "new"
port = 4
key = "a.key"
[[forward]]
name = "fkeep"
key = "` + k + `"
port = 10
[[forward]]
name = "fnew"
key = "` + k + `"
port = 12
`)
	c := Diff(old, cur)
	names := func(es []Expose) (s []string) {
		for _, e := range es {
			s = append(s, e.Name)
		}
		return
	}
	fnames := func(fs []Forward) (s []string) {
		for _, f := range fs {
			s = append(s, f.Name)
		}
		return
	}
	check := func(what string, got []string, want ...string) {
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("StartExpose", names(c.StartExpose), "change", "new")
	check("StopExpose", names(c.StopExpose), "change", "gone")
	check("StartForward", fnames(c.StartForward), "fnew")
	check("StopForward", fnames(c.StopForward), "fgone")
	check("Kept", c.Kept, "keep", "fkeep")
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("[[forward]]\nkey = \"" + strings.Repeat("ab", 32) + "\"\nport = 1\n"))
	f.Add([]byte("bootstrap = [\"a:1\"]\n[[expose]]\nport = 1\nkey = \"/nonexistent\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.toml", data)
		if (file == nil) == (err == nil) {
			t.Fatalf("exactly one of File and error must be set: %v %v", file, err)
		}
	})
}

func TestDerivedNamesUnique(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, "a.key")
	writeKey(t, dir, "b.key")
	f, err := Parse(filepath.Join(dir, "c.toml"), []byte("[[expose]]\nport = 80\nkey = \"a.key\"\n[[expose]]\nport = 80\nkey = \"b.key\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Expose[0].Name != "expose-80" || f.Expose[1].Name != "expose-80#2" {
		t.Fatalf("names %q %q", f.Expose[0].Name, f.Expose[1].Name)
	}
}

func TestRelayThrough(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, "ok.key")
	relay := key.FromSeed(key.Seed{7}).Public
	p := writeConf(t, dir, `relay_through = ["`+relay.String()+`"]

[[expose]]
port = 80
key = "ok.key"
`)
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.RelayThrough) != 1 || f.RelayThrough[0] != relay {
		t.Fatalf("relay_through = %v", f.RelayThrough)
	}
	p = writeConf(t, dir, `log_level = "info"
relay_through = ["nope"]

[[expose]]
port = 80
key = "ok.key"
`)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), ":2: relay_through[0]") {
		t.Fatalf("bad relay_through: %v", err)
	}
}

// An entry's relay_through replaces the top-level list for that entry;
// an empty one means none; a bad key names the entry's line and field;
// changing it restarts the entry on reload.
func TestEntryRelayThrough(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, "ok.key")
	r1, r2 := key.FromSeed(key.Seed{7}).Public, key.FromSeed(key.Seed{8}).Public
	conf := func(exposeRelay string) string {
		return `relay_through = ["` + r1.String() + `"]

[[expose]]
name = "e"
port = 80
key = "ok.key"
` + exposeRelay + `

[[forward]]
name = "f"
key = "` + r1.String() + `"
port = 81
relay_through = []

[[forward]]
name = "g"
key = "` + r1.String() + `"
port = 82
`
	}
	f, err := Load(writeConf(t, dir, conf(`relay_through = ["`+r2.String()+`"]`)))
	if err != nil {
		t.Fatal(err)
	}
	if e := f.Expose[0].Relay; !e.Set || len(e.Keys) != 1 || e.Keys[0] != r2 {
		t.Errorf("expose relay %+v, want its own [%v]", e, r2)
	}
	if got := f.Expose[0].Relay.Override(); len(got) != 1 || got[0] != r2 {
		t.Errorf("expose override %v", got)
	}
	if fw := f.Forward[0].Relay; !fw.Set || len(fw.Keys) != 0 || fw.Override() == nil || len(fw.Override()) != 0 {
		t.Errorf("forward with relay_through = []: %+v override %v, want set, empty, non-nil", fw, fw.Override())
	}
	if fw := f.Forward[1].Relay; fw.Set || fw.Override() != nil {
		t.Errorf("forward without relay_through: %+v, want inherit (nil)", fw)
	}

	_, err = Load(writeConf(t, dir, conf(`relay_through = ["nope"]`)))
	if err == nil || !strings.Contains(err.Error(), ":7: expose[0].relay_through[0]") {
		t.Fatalf("bad entry relay_through: %v", err)
	}

	// A changed relay list restarts the entry; the others are kept.
	old, _ := Load(writeConf(t, dir, conf(`relay_through = ["`+r2.String()+`"]`)))
	cur, _ := Load(writeConf(t, dir, conf(``)))
	ch := Diff(old, cur)
	if len(ch.StopExpose) != 1 || len(ch.StartExpose) != 1 || len(ch.StartForward) != 0 {
		t.Fatalf("diff %+v: want only the expose restarted", ch)
	}
}

// TestUnixSockets: an expose address and a forward's listen address may be
// unix:PATH, a relative PATH taken from the file's directory; unix: alone
// and two forwards on one socket are errors.
func TestUnixSockets(t *testing.T) {
	dir := t.TempDir()
	kp := writeKey(t, dir, "k.key")
	f, err := Load(writeConf(t, dir, `
[[expose]]
address = "unix:/var/run/docker.sock"
key = "k.key"

[[forward]]
key = "`+kp.Public.String()+`"
listen = "unix:run/db.sock"
`))
	if err != nil {
		t.Fatal(err)
	}
	if e := f.Expose[0]; e.Target != "unix:/var/run/docker.sock" || e.Name != "expose-unix:/var/run/docker.sock" {
		t.Errorf("expose = %+v", e)
	}
	if fw := f.Forward[0]; fw.Listen != "unix:"+filepath.Join(dir, "run", "db.sock") {
		t.Errorf("forward listen = %q", fw.Listen)
	}
	p := writeConf(t, dir, `
[[expose]]
address = "unix:"
key = "k.key"

[[forward]]
key = "`+kp.Public.String()+`"
listen = "unix:a.sock"

[[forward]]
key = "`+kp.Public.String()+`"
listen = "unix:`+filepath.Join(dir, "a.sock")+`"
`)
	_, err = Load(p)
	for _, want := range []string{
		p + `:3: expose[0].address: "unix:": want unix:PATH`,
		p + `:12: forward[1].listen: unix:` + filepath.Join(dir, "a.sock") + ` is already the listen address of forward[0]`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in:\n%v", want, err)
		}
	}
}

// UDP entries take ports: a unix: address or listen with udp = true fails
// at its line.
func TestUnixSocketsNotUDP(t *testing.T) {
	dir := t.TempDir()
	kp := writeKey(t, dir, "k.key")
	p := writeConf(t, dir, `
[[expose]]
address = "unix:/run/app.sock"
key = "k.key"
udp = true

[[forward]]
key = "`+kp.Public.String()+`"
listen = "unix:/run/kt/dns.sock"
udp = true
`)
	f, err := Load(p)
	if f != nil {
		t.Fatal("a File came back with errors")
	}
	for _, want := range []string{
		p + `:5: expose[0].udp: a UDP service is a port, not a Unix socket`,
		p + `:10: forward[0].udp: a UDP forward listens on a port, not a Unix socket`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in:\n%v", want, err)
		}
	}
}

// TestKeyDir: with Options.KeyDir, relative key paths are taken from it
// (a service's state directory), absolute ones and unix: paths are not.
func TestKeyDir(t *testing.T) {
	confDir, keyDir := t.TempDir(), t.TempDir()
	kp := writeKey(t, keyDir, "web.key")
	writeKey(t, confDir, "web.key") // the file's directory holds another
	p := writeConf(t, confDir, `
[[expose]]
port = 8080
key = "web.key"

[[forward]]
key = "`+kp.Public.String()+`"
listen = "unix:fwd.sock"
`)
	f, err := Options{KeyDir: keyDir}.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if e := f.Expose[0]; e.KeyFile != filepath.Join(keyDir, "web.key") || e.KeyPair.Public != kp.Public {
		t.Errorf("expose key from %s, want %s", e.KeyFile, filepath.Join(keyDir, "web.key"))
	}
	if fw := f.Forward[0]; fw.Listen != "unix:"+filepath.Join(confDir, "fwd.sock") {
		t.Errorf("forward listen = %q", fw.Listen)
	}
	if f, err := Load(p); err != nil || f.Expose[0].KeyFile != filepath.Join(confDir, "web.key") {
		t.Errorf("without KeyDir: %v", err)
	}
}
