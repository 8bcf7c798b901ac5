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

// joinable checks that a fresh node bootstrapping from bs alone joins.
func joinable(t *testing.T, bs string) {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	n, err := dht.New(dht.Config{Conn: udp, Bootstrap: strings.Split(bs, ",")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
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
