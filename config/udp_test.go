package config

import (
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/tunnel"
)

// udp = true and the flow fields reach Expose and Forward; a UDP and a
// TCP forward may listen on one port number; a changed flow setting
// restarts the entry; the flow fields are refused without udp and out of
// range, each error naming line and field.
func TestUDPEntries(t *testing.T) {
	dir := t.TempDir()
	pk := writeKey(t, dir, "a.key").Public
	p := writeConf(t, dir, `
[[expose]]
port = 5353
key = "a.key"
udp = true
udp_idle_timeout = "90s"
max_flows = 10

[[forward]]
key = "`+pk.String()+`"
port = 5300
udp = true

[[forward]]
key = "`+pk.String()+`"
port = 5300
`)
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	e := f.Expose[0]
	if !e.UDP || e.Flows != (tunnel.FlowOptions{IdleTimeout: 90 * time.Second, MaxFlows: 10}) {
		t.Fatalf("expose: udp %v flows %+v", e.UDP, e.Flows)
	}
	if !f.Forward[0].UDP || f.Forward[1].UDP || f.Forward[0].Flows != (tunnel.FlowOptions{}) {
		t.Fatalf("forwards: %+v", f.Forward)
	}
	old := *f
	old.Expose = []Expose{e}
	old.Expose[0].Flows.MaxFlows = 11
	if c := Diff(&old, f); len(c.StartExpose) != 1 || len(c.StopExpose) != 1 {
		t.Fatalf("changed max_flows: %+v, want a restart", c)
	}

	p = writeConf(t, dir, `
[[expose]]
port = 5353
key = "a.key"
max_flows = 10

[[forward]]
key = "`+pk.String()+`"
port = 5300
udp = true
udp_idle_timeout = "soon"
max_flows = 0
`)
	_, err = Load(p)
	for _, want := range []string{
		":5: expose[0].max_flows: only applies with udp = true",
		`:11: forward[0].udp_idle_timeout: "soon" is not a duration`,
		":12: forward[0].max_flows: 0 is out of range",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}
