package app

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/tunnel"
)

// The control socket answers status requests with what the registry
// holds, refuses other requests with an error object, and Status prints
// it, skipping and removing the socket of a process that is gone.
func TestControlSocketAndStatus(t *testing.T) {
	env, out, _ := testEnv(t, nil)
	env.init()
	env.reg.setCommand("forward")
	peer, _ := key.Generate(nil)
	since := time.Now().Add(-time.Minute)
	remove := env.reg.add(&regTunnel{name: "db", role: "forward", remote: peer.Public.String(), local: "127.0.0.1:5433",
		stats: func() tunnel.Stats {
			return tunnel.Stats{Since: since, BytesSent: 1234, BytesReceived: 5_600_000, ConnsOpen: 2, ConnsTotal: 9, Redials: 3,
				Peers: []tunnel.PeerStats{{Remote: peer.Public, Mode: "mux", Since: since, RTT: 1500 * time.Microsecond, Path: "relay KEY (1.2.3.4:5)"}}}
		}})
	defer remove()
	stop := env.startControl(false)
	defer stop()
	sock := filepath.Join(env.RunDir, "keytunnel-"+strconv.Itoa(os.Getpid())+".sock")
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %s: %v, %v", sock, fi, err)
	}

	ps, err := queryProcess(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if ps.PID != os.Getpid() || ps.Command != "forward" || len(ps.Tunnels) != 1 {
		t.Fatalf("answer %+v", ps)
	}
	tn := ps.Tunnels[0]
	if tn.Name != "db" || tn.Listen != "127.0.0.1:5433" || tn.BytesSent != 1234 || tn.BytesReceived != 5_600_000 ||
		tn.ConnectionsOpen != 2 || tn.ConnectionsTotal != 9 || tn.Redials != 3 || len(tn.Peers) != 1 ||
		tn.Peers[0].RTTMillis != 1.5 || tn.Peers[0].Path != "relay KEY (1.2.3.4:5)" || tn.Peers[0].PublicKey != peer.Public.String() {
		t.Fatalf("tunnel %+v", tn)
	}

	// Bad and unknown requests get an error, and the server goes on.
	for req, want := range map[string]string{"nonsense\n": `{"error":"bad request: `, `{"get":"secrets"}` + "\n": `{"error":"unknown request \"secrets\""}`} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(req))
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		c.Close()
		if !strings.HasPrefix(string(b[:n]), want) {
			t.Fatalf("%q: answer %q, want %q...", req, b[:n], want)
		}
	}

	// A socket left behind by a process that is gone.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(env.RunDir, "keytunnel-"+strconv.Itoa(dead.Process.Pid)+".sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	if err := Status(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !strings.HasPrefix(text, "pid "+strconv.Itoa(os.Getpid())+": forward, running for ") {
		t.Errorf("status begins %q", text)
	}
	for _, want := range []string{"  db: forward 127.0.0.1:5433 to " + peer.Public.String(),
		"    sent 1.2 KB, received 5.6 MB; connections 2 open, 9 total; redials 3; since 1m0s",
		"    peer " + peer.Public.String() + " (mux): relay KEY (1.2.3.4:5), rtt 1.5 ms, up 1m0s"} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale socket: %v", err)
	}
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket after stop: %v", err)
	}
}
