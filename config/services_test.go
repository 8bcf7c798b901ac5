package config

import (
	"strings"
	"testing"

	"github.com/keytunnel/keytunnel/internal/key"
)

// [expose.services.NAME] tables reach Expose.Services (the default
// first, the rest by name, each with the entry's allow list and its
// own); a forward's service reaches Forward.Service; a changed service
// restarts the entry.
func TestServices(t *testing.T) {
	dir := t.TempDir()
	pk := writeKey(t, dir, "a.key").Public
	all, ssh := key.FromSeed(key.Seed{1}).Public, key.FromSeed(key.Seed{2}).Public
	text := `
[[expose]]
name = "host"
key = "a.key"
allow = ["` + all.String() + `"]

[expose.services.web]
port = 8080
default = true

[expose.services.ssh]
address = "127.0.0.1:22"
allow = ["` + ssh.String() + `"]

[expose.services.dns]
port = 53
udp = true

[[expose]]
name = "inline"
key = "a.key"
port = 9000
services = { db = { address = "unix:db.sock" } }

[[forward]]
key = "` + pk.String() + `"
service = "ssh"
port = 2222
`
	f, err := Load(writeConf(t, dir, text))
	if err != nil {
		t.Fatal(err)
	}
	e := f.Expose[0]
	if e.Target != "" || len(e.Services) != 3 {
		t.Fatalf("services: target %q, %+v", e.Target, e.Services)
	}
	web, dns, sshSvc := e.Services[0], e.Services[1], e.Services[2]
	if web.Name != "web" || web.Target != "127.0.0.1:8080" || web.UDP || len(web.Allow) != 1 || !web.Allow.Allows(all) {
		t.Errorf("default service: %+v", web)
	}
	if dns.Name != "dns" || !dns.UDP || dns.Target != "127.0.0.1:53" {
		t.Errorf("dns: %+v", dns)
	}
	if sshSvc.Name != "ssh" || len(sshSvc.Allow) != 2 || !sshSvc.Allow.Allows(ssh) || !sshSvc.Allow.Allows(all) {
		t.Errorf("ssh: %+v", sshSvc)
	}
	if tg, udp := e.Default(); tg != "127.0.0.1:8080" || udp {
		t.Errorf("Default: %q %v", tg, udp)
	}
	if sa := e.SessionAllow(); len(sa) != 2 {
		t.Errorf("SessionAllow: %v, want the union of 2 keys", sa)
	}
	in := f.Expose[1]
	if in.Target != "127.0.0.1:9000" || len(in.Services) != 1 || in.Services[0].Target != "unix:"+dir+"/db.sock" {
		t.Errorf("inline: %+v", in)
	}
	if in.SessionAllow() != nil {
		t.Errorf("open entry's SessionAllow: %v", in.SessionAllow())
	}
	if f.Forward[0].Service != "ssh" {
		t.Errorf("forward service: %q", f.Forward[0].Service)
	}

	// The same file is kept; a changed service restarts its entry.
	g, err := Load(writeConf(t, dir, strings.Replace(text, "port = 53\n", "port = 54\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c := Diff(f, f); len(c.StartExpose)+len(c.StopExpose) != 0 {
		t.Errorf("unchanged file: %+v", c)
	}
	if c := Diff(f, g); len(c.StartExpose) != 1 || c.StartExpose[0].Name != "host" {
		t.Errorf("changed service: %+v", c)
	}
}

// Bad services fail the whole file, each error at its line and field.
func TestServicesErrors(t *testing.T) {
	dir := t.TempDir()
	pk := writeKey(t, dir, "a.key").Public
	_, err := Load(writeConf(t, dir, `
[[expose]]
key = "a.key"

[expose.services.web]
port = 8080

[[expose]]
key = "a.key"
port = 1

[expose.services.Web]
port = 2

[expose.services.ssh]
port = 22
default = true

[expose.services.dns]
address = "unix:x.sock"
udp = true
bogus = 1

[expose.services.none]
allow = ["nope"]

[[forward]]
key = "`+pk.String()+`"
port = 9
service = "a/b"

[[forward]]
key = "hs://0000`+pk.Z32()+`"
port = 10
service = "web"
`))
	if err == nil {
		t.Fatal("invalid file loaded")
	}
	for _, want := range []string{
		":2: expose[0]: needs port or address (the default service), or default = true in one of its services",
		`:12: expose[1].services.Web: name "Web" may hold only a-z`,
		":17: expose[1].services.ssh.default: the entry's port or address is its default service",
		":21: expose[1].services.dns.udp: a UDP service is a port, not a Unix socket",
		":22: expose.services.dns.bogus: unknown field",
		":24: expose[1].services.none: needs port or address",
		":25: expose[1].services.none.allow[0]:",
		`:30: forward[0].service: name "a/b" may hold only a-z`,
		":35: forward[1].service: raw mode",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
