package main

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestDeadBootstrapNode: with a dead bootstrap node listed before a live
// one, expose and connect go on once the live one answered instead of
// waiting out every retry to the dead one (22 s before); with only a dead
// one, connect says after 2 s what it waits for, and Ctrl-C ends it
// without a complaint.
func TestDeadBootstrapNode(t *testing.T) {
	live := proctest.Testnet(t, 3)
	bs := "127.0.0.1:9," + live // the discard port: nothing answers there
	start := time.Now()
	_, pub := proctest.Expose(t, bs, proctest.Echo(t))
	// A bound on a hang, not a speed target: one attempt timeout (1 s)
	// plus start-up, against 22 s before.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("expose took %v to announce with a dead bootstrap node", d)
	}
	start = time.Now()
	out, _, err := runConnect(t, proctest.Env(t, bs), "hello", pub)
	if err != nil || out != "hello" {
		t.Fatalf("connect: %q, %v", out, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("connect took %v with a dead bootstrap node", d)
	}

	p := proctest.Start(t, proctest.Env(t, "127.0.0.1:9"), "connect", pub)
	p.ErrLine("still joining the DHT: waiting for an answer from 127.0.0.1:9", 20*time.Second)
	p.Cmd.Process.Signal(syscall.SIGINT)
	if code := p.Wait(5 * time.Second); code != 0 || strings.Contains(p.Err.String(), "canceled") {
		t.Fatalf("exit %d after SIGINT while joining:\n%s", code, p.Err)
	}
}

// TestBadBootstrapFailsAtOnce: a --bootstrap entry without a port, with a
// bad port or with a malformed host fails before anything is sent.
func TestBadBootstrapFailsAtOnce(t *testing.T) {
	for bs, want := range map[string]string{
		"127.0.0.1":          `keytunnel: --bootstrap "127.0.0.1": no port; want HOST:PORT`,
		"127.0.0.1:0":        `keytunnel: --bootstrap "127.0.0.1:0": "0" is not a UDP port; want HOST:PORT`,
		"127.0.0.1:1,a..b:1": `keytunnel: --bootstrap "a..b:1": "a..b" is neither an IP address nor a host name; want HOST:PORT`,
	} {
		// Not proctest.Start: its loopback check would refuse the bad
		// entries that keytunnel must refuse first.
		cmd := exec.Command(proctest.Binary(t), "--bootstrap", bs, "node")
		cmd.Env = proctest.Env(t, "")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		_, err := proctest.RunBounded(cmd, 30*time.Second)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || stderr.String() != want+"\n" {
			t.Errorf("--bootstrap %s: %v\nstderr %q\nwant   %q", bs, err, stderr.String(), want+"\n")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("--bootstrap %s: failed after %v", bs, d)
		}
	}
}
