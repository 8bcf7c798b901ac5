package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// Tests in this file run the keytunnel binary as separate processes, on
// loopback only: every process gets KEYTUNNEL_BOOTSTRAP of a local testnet
// (never the public nodes) and a private HOME.

func TestMain(m *testing.M) { proctest.MainNoLeaks(m, "os/exec.") }

// loopbackNode is a DHT node on 127.0.0.1 bootstrapping from bs, closed
// with the test.
func loopbackNode(t *testing.T, bs string) *dht.Node {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := dht.New(dht.Config{Conn: udp, Bootstrap: strings.Split(bs, ",")})
	if err != nil {
		udp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); udp.Close() })
	return n
}

// joinable checks that a fresh node bootstrapping from bs alone joins.
func joinable(t *testing.T, bs string) {
	t.Helper()
	n := loopbackNode(t, bs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil || n.State().Nodes == 0 {
		t.Fatalf("a node bootstrapping from %s: %v, %d nodes", bs, err, n.State().Nodes)
	}
}

func freeUDP(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
