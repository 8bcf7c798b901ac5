package tunnel

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestForwarderLeavesVanishedPeer: a peer that vanishes without a word
// (killed, and restarted on the same key) leaves the Forwarder a session
// that looks open; yamux's keepalive gives it up only after a minute.
// A new local connection must not hang on it that long: the session has
// heard nothing for longer than the peer's keepalive allows, does not
// answer a ping, and the connection gets a fresh session within seconds.
// A session that is merely idle (its peer's keepalives arriving) keeps
// serving new connections with no redial.
func TestForwarderLeavesVanishedPeer(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, echo)
	n := newUDXNet(t)
	n.keepAlive = time.Second // dht's is 5 s; quietLimit allows more than either
	ex := NewExposer(n, tg.addr(), ExposeOptions{Logger: testLogger(t, io.Discard)})
	t.Cleanup(func() { ex.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fw := NewForwarder(n, n.server.Public, ln, ForwardOptions{Logger: testLogger(t, io.Discard)})
	t.Cleanup(func() { fw.Close() })
	addr := ln.Addr().String()

	roundTrip := func(what string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(start.Add(within))
		msg := []byte("hello " + what)
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: echo %q, %v after %v", what, got, err, time.Since(start))
		}
		return time.Since(start)
	}

	roundTrip("first", 10*time.Second)
	time.Sleep(quietLimit + time.Second)
	if d := roundTrip("after an idle spell", 5*time.Second); d > time.Second {
		t.Errorf("a connection over an idle session took %v: it should not wait for a ping", d)
	}
	if r := fw.Stats().Redials; r != 0 {
		t.Fatalf("an idle session with its peer's keepalives arriving was redialed (%d redials)", r)
	}

	n.vanish()
	// Within quietLimit of its last frame the session is still trusted,
	// and a connection then would hang with it; a client reconnecting
	// after that finds a fresh session.
	time.Sleep(quietLimit + time.Second)
	d := roundTrip("after the peer vanished", quietLimit+pingWait(nil)+10*time.Second)
	t.Logf("a new connection after the peer vanished got through in %v", d)
	if r := fw.Stats().Redials; r != 1 {
		t.Fatalf("%d redials, want 1", r)
	}
	roundTrip("on the new session", 5*time.Second)
}
