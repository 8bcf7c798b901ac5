package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestRelayAdmissionFlags: `keytunnel relay --max-sessions-per-source 1
// --first-message-timeout 1s` refuses and closes a second connection from
// the same address and closes one that never asks for a pairing, and says
// so in its "relay stopped" line; a negative value is refused before
// anything starts.
func TestRelayAdmissionFlags(t *testing.T) {
	p := proctest.Start(t, proctest.Env(t, "127.0.0.1:9"), "relay", "--max-sessions-per-source", "-1")
	want := "keytunnel: --max-sessions-per-source -1: want a positive number (default 64)\n"
	if code := p.Wait(20 * time.Second); code != 1 || p.Err.String() != want {
		t.Fatalf("negative cap: exit %d, stderr %q, want %q", code, p.Err.String(), want)
	}

	bs := proctest.Testnet(t, 3)
	relay := proctest.Start(t, proctest.Env(t, bs), "--json", "relay", "--max-sessions-per-source", "1", "--first-message-timeout", "1s")
	pub, err := key.ParsePublicKey(proctest.JSON(t, relay.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := dht.New(dht.Config{Conn: conn, Bootstrap: strings.Split(bs, ",")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// closed reads c until the relay closes it, failing after 10 s.
	closed := func(what string, c *dht.Conn) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: still open after 10 s", what)
		}
	}
	start := time.Now()
	silent, err := n.Dial(ctx, pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	over, err := n.Dial(ctx, pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	closed("the second connection from 127.0.0.1", over)
	closed("the silent connection", silent)
	if d := time.Since(start); d < time.Second {
		t.Fatalf("the silent connection closed %v after it was dialed, before --first-message-timeout 1s", d)
	}
	relay.Stop()
	if code := relay.Wait(10 * time.Second); code != 0 {
		t.Fatalf("relay: exit %d", code)
	}
	stopped := proctest.JSON(t, relayLine(t, relay, "relay stopped"))
	// Whichever connection the relay accepted first is the silent one.
	if stopped["sessions_refused"] != 1.0 || stopped["sessions_silent"] != 1.0 {
		t.Fatalf("relay stopped line: %v", stopped)
	}
}
