package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytunnel/keytunnel/internal/holesail"
)

func writeSecretFile(t *testing.T, dir, name string) holesail.Conn {
	t.Helper()
	c, err := holesail.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := holesail.WriteSecretFile(filepath.Join(dir, name), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// secret_file makes an entry private, holesail = true publishes the
// record, and a forward's key may be holesail's public string.
func TestLoadHolesail(t *testing.T) {
	dir := t.TempDir()
	web := writeSecretFile(t, dir, "web.secret")
	pub := writeKey(t, dir, "pub.key")
	p := writeConf(t, dir, `
[[expose]]
name = "web"
port = 8080
secret_file = "web.secret"
holesail = true

[[expose]]
name = "open"
port = 8081
key = "pub.key"
holesail = true

[[forward]]
name = "private"
secret_file = "web.secret"
port = 9000

[[forward]]
name = "hs"
key = "hs://0000`+pub.Public.Z32()+`"
port = 9001

[[forward]]
name = "both"
key = "`+web.PublicKey.String()+`"
secret_file = "`+filepath.Join(dir, "web.secret")+`"
port = 9002
`)
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	e := f.Expose[0]
	if !e.Private || !e.Holesail || e.KeyPair.Public != web.PublicKey || e.KeyFile != filepath.Join(dir, "web.secret") ||
		len(e.Allow) != 1 || e.Allow[0] != web.PublicKey {
		t.Errorf("private expose = %+v", e)
	}
	if e := f.Expose[1]; e.Private || !e.Holesail || len(e.Allow) != 0 {
		t.Errorf("public holesail expose = %+v", e)
	}
	for _, fw := range []Forward{f.Forward[0], f.Forward[2]} {
		if fw.Key != web.PublicKey || fw.KeyPair.Public != web.PublicKey || !fw.Raw {
			t.Errorf("private forward %s = key %s, identity %s, raw %v", fw.Name, fw.Key, fw.KeyPair.Public, fw.Raw)
		}
	}
	if fw := f.Forward[1]; fw.Key != pub.Public || !fw.KeyPair.Public.IsZero() || !fw.Raw {
		t.Errorf("hs:// forward = %+v", fw)
	}

	// A changed secret is a changed entry.
	other := writeSecretFile(t, dir, "other.secret")
	g := *f
	g.Forward = append([]Forward(nil), f.Forward...)
	g.Forward[0].KeyPair = other.KeyPair
	if d := Diff(f, &g); len(d.StartForward) != 1 || d.StartForward[0].Name != "private" {
		t.Errorf("diff of a changed secret: %+v", d)
	}
}

func TestLoadHolesailErrors(t *testing.T) {
	dir := t.TempDir()
	web := writeSecretFile(t, dir, "web.secret")
	writeKey(t, dir, "web.key")
	open := filepath.Join(dir, "open.secret")
	os.WriteFile(open, []byte(web.String()+"\n"), 0o644)
	for _, c := range []struct{ entry, want string }{
		{`[[expose]]
port = 1
key = "web.key"
secret_file = "web.secret"`, "set key or secret_file, not both"},
		{`[[expose]]
port = 1
secret_file = "missing.secret"`, "expose[0].secret_file"},
		{`[[expose]]
port = 1
secret_file = "open.secret"`, "chmod"},
		{`[[forward]]
port = 1
key = "` + web.String() + `"`, "a private connection string is a secret"},
		{`[[forward]]
port = 1
key = "hs://0000abc"`, "forward[0].key"},
		{`[[forward]]
port = 1
key = "` + strings.Repeat("a", 64) + `"
secret_file = "web.secret"`, "holds the string of service"},
		{`[[forward]]
port = 1`, "needs key"},
	} {
		_, err := Load(writeConf(t, dir, c.entry))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v, want %q", c.entry, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(web.String(), "hs://s000")) {
			t.Errorf("error shows the secret: %v", err)
		}
	}
}
