package config

import (
	"strings"
	"testing"

	"github.com/keytunnel/keytunnel/tunnel"
)

// An [[expose]] entry's max_* fields become its tunnel.Budget; out of
// range values are errors naming the line and field; a changed budget
// restarts the entry on reload.
func TestExposeBudget(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, "a.key")
	p := writeConf(t, dir, `
[[expose]]
port = 8080
key = "a.key"
max_sessions = 4
max_streams_per_session = 10
max_streams = 20
max_buffer_mib = 8
`)
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	want := tunnel.Budget{Sessions: 4, StreamsPerSession: 10, Streams: 20, Memory: 8 << 20}
	if got := f.Expose[0].Budget; got != want {
		t.Fatalf("budget %+v, want %+v", got, want)
	}
	old := *f
	old.Expose = []Expose{f.Expose[0]}
	old.Expose[0].Budget.Streams = 30
	if c := Diff(&old, f); len(c.StartExpose) != 1 || len(c.StopExpose) != 1 {
		t.Fatalf("changed budget: %+v, want a restart", c)
	}

	p = writeConf(t, dir, `
[[expose]]
port = 8080
key = "a.key"
max_streams = 0
max_buffer_mib = -1
`)
	_, err = Load(p)
	if err == nil || !strings.Contains(err.Error(), ":5: expose[0].max_streams: 0 is out of range") ||
		!strings.Contains(err.Error(), ":6: expose[0].max_buffer_mib: -1 is out of range") {
		t.Fatalf("bad caps: %v", err)
	}
}
