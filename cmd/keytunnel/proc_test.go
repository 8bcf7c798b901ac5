package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// Tests in this file run the keytunnel binary as separate processes, on
// loopback only: every process gets KEYTUNNEL_BOOTSTRAP of a local testnet
// (never the public nodes) and a private HOME.

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoLeak(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	proctest.Cleanup()
	os.Exit(code)
}

func waitNoLeak(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var ours []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if (strings.Contains(g, "keytunnel/keytunnel/") || strings.Contains(g, "os/exec.")) &&
				!strings.Contains(g, "TestMain") && !strings.Contains(g, "waitNoLeak") {
				ours = append(ours, g)
			}
		}
		if len(ours) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(ours, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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
