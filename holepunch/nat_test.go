package holepunch

import (
	"fmt"
	"net/netip"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func node(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), 49737)
}

func TestNATClassification(t *testing.T) {
	cases := []struct {
		name    string
		samples []string
		want    Firewall
		addrs   []string
	}{
		{"too few", []string{"1.1.1.1:5", "1.1.1.1:5"}, FirewallUnknown, nil},
		{"consistent", []string{"1.1.1.1:5", "1.1.1.1:5", "1.1.1.1:5"}, FirewallConsistent, []string{"1.1.1.1:5"}},
		{"random", []string{"1.1.1.1:5", "1.1.1.1:6", "1.1.1.1:7"}, FirewallRandom, []string{"1.1.1.1:0"}},
		{"two hits, undecided at 3", []string{"1.1.1.1:5", "1.1.1.1:5", "1.1.1.1:7"}, FirewallUnknown, nil},
		{"two hits, one host, 4 samples", []string{"1.1.1.1:5", "1.1.1.1:5", "1.1.1.1:7", "1.1.1.1:8"}, FirewallRandom, []string{"1.1.1.1:0"}},
		{"two hosts double hits", []string{"1.1.1.1:5", "1.1.1.1:5", "2.2.2.2:9", "2.2.2.2:9"}, FirewallConsistent, []string{"1.1.1.1:5", "2.2.2.2:9"}},
		{"two hosts, 5 samples undecided → random", []string{"1.1.1.1:5", "1.1.1.1:5", "2.2.2.2:9", "2.2.2.2:8", "3.3.3.3:1"}, FirewallRandom, []string{"1.1.1.1:0"}},
		{"consistent lists first two", []string{"1.1.1.1:5", "1.1.1.1:5", "1.1.1.1:5", "1.1.1.1:6"}, FirewallConsistent, []string{"1.1.1.1:5", "1.1.1.1:6"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := NewNAT(true)
			for i, s := range c.samples {
				n.Add(ap(s), node(i))
			}
			if n.Firewall() != c.want {
				t.Fatalf("firewall %v, want %v", n.Firewall(), c.want)
			}
			if fmt.Sprint(n.Addresses()) != fmt.Sprint(addrs(c.addrs)) {
				t.Fatalf("addresses %v, want %v", n.Addresses(), c.addrs)
			}
		})
	}
}

func addrs(ss []string) []netip.AddrPort {
	if ss == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, ap(s))
	}
	return out
}

func TestNATOneVotePerNode(t *testing.T) {
	n := NewNAT(true)
	for range 5 {
		n.Add(ap("1.1.1.1:5"), node(1))
	}
	if n.Sampled() != 1 || n.Firewall() != FirewallUnknown {
		t.Fatalf("one node counted %d times, firewall %v", n.Sampled(), n.Firewall())
	}
}

func TestNATOpenAndFreeze(t *testing.T) {
	n := NewNAT(false)
	if n.Firewall() != FirewallOpen || !n.Settled(4) {
		t.Fatal("unfirewalled node must be OPEN at once")
	}
	n.Add(ap("1.1.1.1:5"), node(1))
	if n.Firewall() != FirewallOpen || n.Addresses() != nil {
		t.Fatalf("open: %v %v", n.Firewall(), n.Addresses())
	}
	n.SetFirewalled(true)
	if n.Firewall() != FirewallUnknown {
		t.Fatalf("after firewalled: %v", n.Firewall())
	}
	n.Freeze()
	for i := 2; i < 6; i++ {
		n.Add(ap("1.1.1.1:5"), node(i))
	}
	if n.Firewall() != FirewallUnknown {
		t.Fatalf("frozen classifier changed to %v", n.Firewall())
	}
	n.Unfreeze()
	if n.Firewall() != FirewallConsistent {
		t.Fatalf("after unfreeze: %v", n.Firewall())
	}
}
