package main

import (
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// TestHangupIgnored: SIGHUP neither kills expose nor forward (only up
// reloads on it); each logs that it ignored it and keeps tunnelling.
func TestHangupIgnored(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	ex, pub := proctest.Expose(t, bs, proctest.Echo(t))
	fw, addr := proctest.Forward(t, bs, pub)
	proctest.EchoOnce(t, addr, "before")
	for _, p := range []*proctest.Proc{ex, fw} {
		p.Cmd.Process.Signal(syscall.SIGHUP)
	}
	for _, p := range []*proctest.Proc{ex, fw} {
		p.ErrLine("SIGHUP ignored", 10*time.Second)
	}
	proctest.EchoOnce(t, addr, "after SIGHUP")
	for _, p := range []*proctest.Proc{fw, ex} {
		p.Stop()
		if code := p.Wait(time.Second); code != 0 {
			t.Fatalf("%s: exit %d", p.Name, code)
		}
	}
}

// TestHangupIgnoredServers: SIGHUP kills none of the long-running
// servers (testnet, node, relay, dht-relay); each logs that it ignored
// it, and afterwards the testnet, the node and the dht-relay still carry
// an expose (through the dht-relay) and a forward (bootstrapped from the
// node only) to each other.
func TestHangupIgnoredServers(t *testing.T) {
	tn := proctest.Start(t, proctest.Env(t, ""), "--json", "testnet", "--nodes", "3")
	bs := proctest.JSON(t, tn.Line(`"event":"testnet"`, 60*time.Second))["bootstrap"].(string)
	node := proctest.Start(t, proctest.Env(t, bs), "--json", "node")
	nodeAddr := proctest.JSON(t, node.Line(`"event":"node"`, 60*time.Second))["address"].(string)
	relay := proctest.Start(t, proctest.Env(t, bs), "--json", "relay")
	relay.Line(`"event":"listening"`, 60*time.Second)
	port := proctest.FreeTCP(t)
	dr := proctest.Start(t, proctest.Env(t, bs), "--json", "dht-relay", "--host", "127.0.0.1", "--port", strconv.Itoa(port))
	url := proctest.JSON(t, dr.Line(`"event":"dht-relay"`, 60*time.Second))["address"].(string)

	procs := []*proctest.Proc{tn, node, relay, dr}
	for _, p := range procs {
		p.Cmd.Process.Signal(syscall.SIGHUP)
	}
	for _, p := range procs {
		p.ErrLine("SIGHUP ignored", 10*time.Second)
	}
	ex := proctest.Start(t, proctest.Env(t, bs), "--json", "--relay", url, "expose", proctest.Echo(t))
	pub := proctest.JSON(t, ex.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string)
	_, addr := proctest.Forward(t, nodeAddr, pub)
	proctest.EchoOnce(t, addr, "after SIGHUP")
	for _, p := range append([]*proctest.Proc{ex}, procs...) {
		p.Stop()
		if code := p.Wait(time.Second); code != 0 {
			t.Fatalf("%s: exit %d", p.Name, code)
		}
	}
}
