package main

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// A dht-relay with 256 file descriptors (issue #13: before, 257 silent
// connections made it exit 1) takes 1,000 connections that never speak,
// on TCP and on --ws, and then still serves a real client: an expose
// through it announces, and a forward over the DHT reaches the service.
func TestE2EDHTRelaySilentFlood(t *testing.T) {
	for _, ws := range []bool{false, true} {
		name := "tcp"
		if ws {
			name = "ws"
		}
		t.Run(name, func(t *testing.T) { silentFlood(t, ws) })
	}
}

func silentFlood(t *testing.T, ws bool) {
	bs := proctest.Testnet(t, 4)
	port := proctest.FreeTCP(t)
	args := fmt.Sprintf("ulimit -n 256 && exec %s --json dht-relay --host 127.0.0.1 --port %d", proctest.Binary(t), port)
	if ws {
		args += " --ws"
	}
	relay := proctest.StartCmd(t, exec.Command("sh", "-c", args), proctest.Env(t, bs))
	url := proctest.JSON(t, relay.Line(`"event":"dht-relay"`, 60*time.Second))["address"].(string)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	var silent []net.Conn
	t.Cleanup(func() {
		for _, c := range silent {
			c.Close()
		}
	})
	for i := 0; i < 1000; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("silent connection %d: %v", i, err)
		}
		silent = append(silent, c)
	}
	if err := syscall.Kill(relay.Pid(), 0); err != nil {
		t.Fatalf("relay gone after 1000 silent connections: %v", err)
	}
	// Those the relay took in time out (or were refused at once); the
	// attacker keeps its ends open.
	time.Sleep(4 * time.Second)

	target := proctest.Echo(t)
	ex := proctest.Start(t, proctest.Env(t, bs), "--relay", url, "--json", "expose", target)
	pub, _ := proctest.JSON(t, ex.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string)
	_, local := proctest.Forward(t, bs, pub)
	proctest.EchoOnce(t, local, "through a relay that survived a flood")
	t.Logf("relay: %d accept failures retried", relay.Err.Count("accept failed; retrying"))
	// The relay is still up and still logs nothing fatal.
	if relay.Err.Count(`"level":"ERROR"`) != 0 {
		t.Fatalf("relay logged errors:\n%s", relay.Err)
	}
	if err := syscall.Kill(relay.Pid(), 0); err != nil {
		t.Fatalf("relay gone: %v", err)
	}
}
