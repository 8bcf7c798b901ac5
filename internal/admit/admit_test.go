package admit

import (
	"net/netip"
	"testing"
)

func TestSource(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:5000":            "192.0.2.7/32",
		"192.0.2.7":                 "192.0.2.7/32",
		"[::ffff:192.0.2.7]:1":      "192.0.2.7/32",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":      "2001:db8:1:2::/64",
	} {
		if got := Source(in); got != netip.MustParsePrefix(want) {
			t.Errorf("Source(%q) = %v, want %v", in, got, want)
		}
	}
	if got := Source("not an address"); got.IsValid() {
		t.Errorf("Source of garbage = %v, want the zero Prefix", got)
	}
}

func TestCounter(t *testing.T) {
	var c Counter
	a, b := Source("192.0.2.1:1"), Source("[2001:db8::1]:1")
	for i, want := range []bool{true, true, false} {
		if got := c.Acquire(a, 3, 2); got != want {
			t.Fatalf("source a, connection %d admitted %v, want %v", i, got, want)
		}
	}
	if !c.Acquire(b, 3, 2) {
		t.Fatal("another source refused under the caps")
	}
	if c.Acquire(Source("[2001:db8::2]:1"), 4, 1) {
		t.Fatal("a second address of the same /64 passed a per-source cap of 1")
	}
	if c.Acquire(Source("192.0.2.3:1"), 3, 2) {
		t.Fatal("admitted over the total cap")
	}
	c.Release(a)
	if c.Count() != 2 {
		t.Fatalf("count after a release = %d, want 2", c.Count())
	}
	if !c.Acquire(a, 3, 2) {
		t.Fatal("source a refused after a release")
	}
	c.Release(a)
	c.Release(a)
	c.Release(b)
	if c.Count() != 0 || len(c.per) != 0 {
		t.Fatalf("after releasing everything: count %d, %d sources kept", c.Count(), len(c.per))
	}
}
