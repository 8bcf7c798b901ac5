package main

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// closeTime connects to addr and returns how long forward took to close
// the connection, which it must do within limit.
func closeTime(t *testing.T, addr string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	io.WriteString(c, "hello")
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && strings.Contains(err.Error(), "timeout")) {
		t.Fatalf("local connection to an unreachable peer: got %q, %v after %v (want it closed within %v)", b, err, time.Since(start), limit)
	}
	return time.Since(start)
}

// TestForwardUnreachablePeer: `keytunnel forward` to a key nobody
// exposes closes a local connection as soon as its dial fails (not after
// holding it 30 s), with one log line that says why and what to check;
// connections during the backoff that follows fail at once without a
// dial; and once the service is up, the first connection after the
// backoff dials at once and gets through (not after a backoff of up to
// 30 s, as before). When the service is then killed (its announce stays
// on the DHT), a new connection is closed after two unanswered dials.
func TestForwardUnreachablePeer(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	seed, kp := proctest.WriteSeed(t, "svc.key")
	fw, addr := proctest.Forward(t, bs, kp.Public.String())

	first := closeTime(t, addr, 20*time.Second)
	line := fw.ErrLine("dropping local connection: cannot reach the peer", 10*time.Second)
	t.Logf("first connection closed after %v: %s", first.Round(time.Millisecond), line)
	if !strings.Contains(line, "PEER_NOT_FOUND") || !strings.Contains(line, "check that its expose runs") {
		t.Fatalf("the log line does not say why and what to do: %s", line)
	}
	var during []time.Duration
	for range 4 {
		during = append(during, closeTime(t, addr, 20*time.Second).Round(time.Millisecond))
	}
	dials := fw.Out.Count(`"event":"redialing"`)
	t.Logf("4 more connections closed after %v; %d dials in all", during, dials)
	if dials < 1 || dials > 5 {
		t.Fatalf("%d dials for 5 connections", dials)
	}
	for _, d := range during {
		if d > 10*time.Second {
			t.Fatalf("a connection was held %v", d)
		}
	}

	// The service comes up; after the backoff (at most 5 s) one
	// connection reaches it.
	time.Sleep(5500 * time.Millisecond)
	ex, _ := proctest.Expose(t, bs, proctest.Echo(t), "--key", seed)
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	proctest.RoundTrip(t, c, "back again")
	took := time.Since(start)
	t.Logf("after the service came up, the first connection got through in %v", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Fatalf("the first connection after the service came up took %v", took)
	}
	if n := fw.Out.Count(`"event":"connected"`); n != 1 {
		t.Fatalf("%d connected events, want 1", n)
	}
	c.Close()

	// The service dies without a word (SIGKILL): its announce stays on
	// the DHT, so dials find it and go unanswered. A new connection is
	// closed after two such dials, not held for the 30 s wait.
	ex.Cmd.Process.Kill()
	fw.Line(`"event":"disconnected"`, 60*time.Second)
	gone := closeTime(t, addr, 60*time.Second)
	// The drop is logged before the connection closes, but the log line
	// reaches the test through a pipe, maybe after the close.
	var last string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, l := range fw.Err.All() {
			if strings.Contains(l, "dropping local connection: cannot reach the peer") {
				last = l
			}
		}
		if strings.Contains(last, "PEER_CONNECTION_FAILED") {
			break
		}
	}
	t.Logf("after the service was killed, a new connection was closed after %v: %s", gone.Round(time.Millisecond), last)
	if gone > 28*time.Second {
		t.Fatalf("a connection to a killed service was held %v", gone)
	}
	if !strings.Contains(last, "PEER_CONNECTION_FAILED") {
		t.Fatalf("the last drop does not say the peer did not answer: %s", last)
	}
}
