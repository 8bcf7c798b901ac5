package ssh_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// The README's recipe, end to end on a loopback testnet: an OpenSSH server
// on a loopback port (its own host key, config and authorized test key),
// exposed with `keytunnel expose`, logged in to through
// `ssh -o ProxyCommand='keytunnel connect %h'` and through `keytunnel ssh`.

func TestMain(m *testing.M) { proctest.Main(m) }

// requireSSH returns the paths of sshd, ssh and ssh-keygen; without them
// the test skips, or fails under CI (.ci/run installs openssh-server).
func requireSSH(t *testing.T) (sshd, ssh, keygen string) {
	t.Helper()
	find := func(name string, extra ...string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, p := range extra {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		msg := name + " not found (apt-get install openssh-server openssh-client)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
		return ""
	}
	return find("sshd", "/usr/sbin/sshd"), find("ssh"), find("ssh-keygen")
}

// startSSHD runs sshd in the foreground on a loopback port with a fresh
// host key, admitting the returned client key for the current user.
func startSSHD(t *testing.T, sshd, keygen string) (addr, clientKey, login string) {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	for _, k := range []string{"host_key", "client_key"} {
		out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "keytunnel-test", "-f", filepath.Join(dir, k)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// sshd's privilege separation directory, which the package
		// creates at boot only.
		os.MkdirAll("/run/sshd", 0o755)
	}
	port := proctest.FreeTCP(t)
	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
AllowUsers %s
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
`, port, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), u.Username)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := proctest.StartCmd(t, exec.Command(sshd, "-D", "-e", "-f", cfg), os.Environ())
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	p.ErrLine("Server listening on 127.0.0.1", 10*time.Second)
	return addr, filepath.Join(dir, "client_key"), u.Username
}

func TestSSHThroughKeytunnel(t *testing.T) {
	sshd, ssh, keygen := requireSSH(t)
	bin := proctest.Binary(t)
	bs := proctest.Testnet(t, 4)
	addr, clientKey, login := startSSHD(t, sshd, keygen)
	_, pub := proctest.Expose(t, bs, addr)

	env := proctest.Env(t, bs) // connect finds the testnet in KEYTUNNEL_BOOTSTRAP
	proctest.CheckLoopbackOnly(t, env, []string{"connect"})
	opts := []string{
		"-F", "/dev/null", "-i", clientKey, "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=60",
	}
	// A remote command whose output proves where it ran and that stdin
	// (1 MiB) crossed the tunnel whole.
	const remote = `echo "user=$(id -un) sum=$((6*7)) stdin=$(wc -c)"`
	want := fmt.Sprintf("user=%s sum=42 stdin=%d\n", login, 1<<20)
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(bytes.Repeat([]byte("x"), 1<<20))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		out, err := proctest.RunBounded(cmd, 90*time.Second)
		if err != nil || string(out) != want {
			t.Fatalf("%s: %v\nstdout %q, want %q\nstderr:\n%s", filepath.Base(name), err, out, want, stderr.String())
		}
		t.Logf("%s: %q in %v", filepath.Base(name), out, time.Since(start).Round(time.Millisecond))
	}

	// The README's line: ssh -o ProxyCommand='keytunnel connect %h' user@KEY
	run(ssh, append(append([]string{"-o", "ProxyCommand=" + bin + " connect %h"}, opts...), login+"@"+pub, remote)...)
	// keytunnel ssh, which builds that ProxyCommand (with --bootstrap).
	run(bin, append(append([]string{"ssh"}, opts...), login+"@"+pub, remote)...)
}
