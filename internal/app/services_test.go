package app

import (
	"strings"
	"testing"

	"github.com/keytunnel/keytunnel/internal/key"
)

func TestParseServices(t *testing.T) {
	svcs, err := parseServices([]string{"web=8080", "ssh=10.0.0.5:22", "dns=udp:53", "docker=unix:/run/docker.sock"})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, target string
		udp          bool
	}{{"web", "127.0.0.1:8080", false}, {"ssh", "10.0.0.5:22", false}, {"dns", "127.0.0.1:53", true}, {"docker", "unix:/run/docker.sock", false}}
	for i, w := range want {
		if s := svcs[i]; s.Name != w.name || s.Target != w.target || s.UDP != w.udp {
			t.Errorf("service %d: %+v, want %+v", i, s, w)
		}
	}
	for spec, msg := range map[string]string{
		"web":                          "want NAME=TARGET",
		"web=":                         "want NAME=TARGET",
		"=80":                          "1 to 63 bytes",
		"a b=80":                       "only a-z",
		"dns=udp:unix:/x":              "not a Unix socket",
		"web=notaport":                 "--service web",
		strings.Repeat("a", 64) + "=1": "1 to 63 bytes",
	} {
		if _, err := parseServices([]string{spec}); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v, want %q", spec, err, msg)
		}
	}
	if _, err := parseServices([]string{"web=1", "web=2"}); err == nil || !strings.Contains(err.Error(), `"web" named twice`) {
		t.Errorf("duplicate: %v", err)
	}
}

func TestParseServiceAllow(t *testing.T) {
	a, b := genPub(t), genPub(t)
	svcs, _ := parseServices([]string{"web=1", "ssh=2"})
	all, per, err := parseServiceAllow([]string{a.String(), "ssh=" + a.String() + "," + b.Z32()}, svcs)
	if err != nil || len(all) != 1 || all[0] != a || len(per["ssh"]) != 2 || per["ssh"][1] != b || len(per["web"]) != 0 {
		t.Fatalf("all %v, per %v, %v", all, per, err)
	}
	if _, _, err := parseServiceAllow([]string{"db=" + a.String()}, svcs); err == nil || !strings.Contains(err.Error(), `no --service named "db"`) {
		t.Errorf("unknown service: %v", err)
	}
	if _, _, err := parseServiceAllow([]string{"ssh="}, svcs); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("empty: %v", err)
	}
	if _, _, err := parseServiceAllow([]string{"ssh=xyz"}, svcs); err == nil || !strings.Contains(err.Error(), "--allow ssh=") {
		t.Errorf("bad key: %v", err)
	}
}

func TestSplitService(t *testing.T) {
	k := genPub(t).String()
	for _, tc := range []struct{ in, remote, service, err string }{
		{k, k, "", ""},
		{k + "/web", k, "web", ""},
		{"hs://0000" + k + "/x", "hs://0000" + k + "/x", "", ""},
		{k + "/Web", "", "", "names a service"},
		{k + "/", "", "", "names a service"},
	} {
		r, s, err := splitService(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r != tc.remote || s != tc.service {
			t.Errorf("%q: %q %q %v", tc.in, r, s, err)
		}
	}
}

func genPub(t *testing.T) key.PublicKey {
	kp, err := key.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp.Public
}
