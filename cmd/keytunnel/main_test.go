package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytunnel/keytunnel/internal/app"
	"github.com/keytunnel/keytunnel/internal/key"
)

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	env := &app.Env{Stdout: &o, Stderr: &e}
	err = newApp(env).Run(append([]string{"keytunnel"}, args...))
	if err != nil {
		env.PrintError(err)
	}
	return o.String(), e.String(), err
}

func TestKeygen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "id.key")
	out, _, err := run(t, "keygen", "--out", p)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := key.ReadSeedFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != kp.Public.String() {
		t.Fatalf("printed %q, file holds %s", out, kp.Public)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	if _, _, err := run(t, "keygen", "--out", p); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Fatalf("second keygen: %v", err)
	}
	if again, _ := key.ReadSeedFile(p); again.Public != kp.Public {
		t.Fatal("key overwritten")
	}
	out, _, err = run(t, "keygen")
	if err != nil || !strings.Contains(out, "seed ") {
		t.Fatalf("keygen to stdout: %q %v", out, err)
	}
}

func TestBadLogLevel(t *testing.T) {
	if _, _, err := run(t, "--log-level", "loud", "keygen"); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("err = %v", err)
	}
}

// TestRelayNonCustodialNeedsRelay: the flag alone is an error, not a
// silent no-op.
func TestRelayNonCustodialNeedsRelay(t *testing.T) {
	_, stderr, err := run(t, "--relay-noncustodial", "keygen", "--out", filepath.Join(t.TempDir(), "k"))
	if err == nil || !strings.Contains(stderr, "--relay-noncustodial needs --relay") {
		t.Fatalf("err %v, stderr %q", err, stderr)
	}
}
