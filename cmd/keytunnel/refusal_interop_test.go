package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// Refusals across implementations: Node clients (hyperdht, hypertele)
// against `keytunnel expose --allow`, and keytunnel against a Node
// server's firewall.

// countingEcho is an echo service that counts the connections it gets.
func countingEcho(t *testing.T) (string, *atomic.Int64) {
	var n atomic.Int64
	addr := proctest.Serve(t, func(c net.Conn) {
		n.Add(1)
		c.SetDeadline(time.Now().Add(time.Minute))
		buf := make([]byte, 32<<10)
		for {
			k, err := c.Read(buf)
			if k > 0 {
				c.Write(buf[:k])
			}
			if err != nil {
				return
			}
		}
	})
	return addr, &n
}

// TestInteropNodeClientsRefusedByExpose: a hyperdht client and a
// hypertele client whose keys `expose --allow` does not name are refused
// (the hyperdht client is told SERVER_ERROR, hypertele's local connection
// is closed without a byte), and the target never sees a connection.
func TestInteropNodeClientsRefusedByExpose(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	target, conns := countingEcho(t)
	_, friend := proctest.WriteSeed(t, "friend.key")
	ex, pub := proctest.Expose(t, bs, target, "--allow", friend.Public.Z32())
	// expose's own check that the target listens comes after its first
	// line: wait for it, so that it does not count as a refused client's.
	for deadline := time.Now().Add(10 * time.Second); conns.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	before := conns.Load()

	t.Run("hyperdht", func(t *testing.T) {
		p := nodetest.Start(t, "hyperdht-peer.js", "client", bs, pub, "1024")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		line, err := p.Line(ctx)
		if err != nil {
			t.Fatalf("hyperdht client: %v\n%s", err, p.Stderr())
		}
		if !strings.HasPrefix(line, "error SERVER_ERROR") {
			t.Fatalf("hyperdht client: %q, want its SERVER_ERROR refusal", line)
		}
		t.Logf("hyperdht client: %s", line)
	})

	t.Run("hypertele", func(t *testing.T) {
		cli := nodetest.Start(t, "node_modules/hypertele/client.js", "-p", "0", "-s", pub, "--bootstrap", proctest.FirstPort(t, bs))
		local := cli.Expect("Server ready @", 60*time.Second)
		c, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("knock"))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		n, err := c.Read(make([]byte, 64))
		var ne net.Error
		if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("hypertele's local connection: %d bytes, %v; want it closed without a byte", n, err)
		}
		t.Logf("hypertele closed its local connection after %v (%v)", time.Since(start).Round(time.Millisecond), err)
	})

	if got := conns.Load(); got != before {
		t.Fatalf("the target saw %d connections from refused clients", got-before)
	}
	if n := ex.Out.Count(`"event":"connected"`); n != 0 {
		t.Fatalf("expose reported %d connections, want none", n)
	}
}

// TestInteropNodeFirewallRefusesKeytunnel: a Node hyperdht server (raw
// echo) whose firewall admits one key. keytunnel connect --raw with that
// key gets through; with another it fails with one line naming the
// firewall. hyperdht's server refuses in silence (its firewall makes it
// drop the handshake, where keytunnel's answers ABORTED), so the client
// can only give up when its handshake requests time out, after ~8 s, and
// cannot tell the refusal from a vanished peer: the line says both.
func TestInteropNodeFirewallRefusesKeytunnel(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	friendFile, friend := proctest.WriteSeed(t, "friend.key")
	strangerFile, stranger := proctest.WriteSeed(t, "stranger.key")
	seed, pub := rawSeed(t)
	srv := nodetest.Start(t, "hyperdht-peer.js", "server", bs, seed, hex.EncodeToString(friend.Public[:]))
	if got := srv.Expect("listening ", 60*time.Second); got != pub.String() {
		t.Fatalf("Node server listens on %s, want %s", got, pub)
	}

	fc := connectCmd(t, bs, friendFile, pub.String(), "hello node\n", "--raw")
	var ferr bytes.Buffer
	fc.Stderr = &ferr
	out, err := proctest.RunBounded(fc, 60*time.Second)
	if err != nil || string(out) != "hello node\n" {
		t.Fatalf("the allowed key's connect: %v, %q\n%s", err, out, ferr.String())
	}

	p := connectCmd(t, bs, strangerFile, pub.String(), "should not arrive\n", "--raw")
	var stderr bytes.Buffer
	p.Stderr = &stderr
	start := time.Now()
	out, err = proctest.RunBounded(p, 60*time.Second)
	took := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(out) != 0 {
		t.Fatalf("stranger connect: %v, stdout %q, stderr %q", err, out, stderr.String())
	}
	t.Logf("stranger connect failed after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(stderr.String()))
	if got := srv.Expect("denied ", 10*time.Second); got != stranger.Public.String() {
		t.Fatalf("the Node server denied %s, want the stranger %s", got, stranger.Public)
	}
	want := "keytunnel: cannot reach " + pub.String() + ": dht: PEER_CONNECTION_FAILED: the peer did not answer the handshake (it is gone, or its firewall refuses our key: Node servers refuse without a word): rpc: request timed out"
	if strings.TrimSpace(stderr.String()) != want {
		t.Fatalf("stranger connect stderr:\n%s\nwant the one line %q", stderr.String(), want)
	}
	if took > 20*time.Second {
		t.Fatalf("stranger connect took %v to give up, want under 20 s", took)
	}
}
