package dht

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

type nodeNet struct {
	t    *testing.T
	p    *nodetest.Proc
	boot string
	all  []string
}

func startNodeNet(t *testing.T, args ...string) *nodeNet {
	t.Helper()
	p := nodetest.Start(t, "hyperdht-node.js", args...)
	nn := &nodeNet{t: t, p: p}
	nn.boot = p.Expect("bootstrap ", 60*time.Second)
	nn.all = strings.Split(p.Expect("ready ", 60*time.Second), ",")
	return nn
}

// do sends one command and returns its answer line (after the prefix).
func (nn *nodeNet) do(prefix, format string, args ...any) string {
	nn.t.Helper()
	fmt.Fprintf(nn.p.Stdin(), format+"\n", args...)
	for {
		l := nn.p.Expect("", 20*time.Second)
		if l == prefix {
			return ""
		}
		if rest, ok := strings.CutPrefix(l, prefix+" "); ok {
			return rest
		}
		if strings.HasPrefix(l, "error ") {
			nn.t.Fatalf("node: %s", l)
		}
	}
}

func hx(b []byte) string { return hex.EncodeToString(b) }

func seedHex(b byte) string { return strings.Repeat(fmt.Sprintf("%02x", b), 32) }

func goLookup(t *testing.T, ctx context.Context, n *Node, topic [32]byte) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	s := n.Lookup(ctx, topic)
	for r := range s.All(ctx) {
		for _, p := range r.Peers {
			got[hx(p.PublicKey[:])] = true
		}
	}
	return got
}

// mixedChecks runs every storage operation across the Go/Node border.
func mixedChecks(t *testing.T, g *Node, goStore *Node, nn *nodeNet) {
	ctx := testCtx(t, 3*time.Minute)
	goKP, nodeKP := seedKey(0x11), seedKey(0x22)
	topic := Hash([]byte("mixed topic"))

	// Go announces, Node finds it.
	if err := g.Announce(ctx, topic, goKP, []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:5")}, nil); err != nil {
		t.Fatal(err)
	}
	if got := nn.do("lookup", "lookup %s", hx(topic[:])); !strings.Contains(got, hx(goKP.Public[:])) {
		t.Fatalf("node lookup after go announce: %s", got)
	}
	// Node announces, Go finds it.
	nn.do("announced", "announce %s %s", hx(topic[:]), seedHex(0x22))
	got := goLookup(t, ctx, g, topic)
	if !got[hx(nodeKP.Public[:])] || !got[hx(goKP.Public[:])] {
		t.Fatalf("go lookup: %v", got)
	}
	// Unannounce both ways.
	if err := g.Unannounce(ctx, topic, goKP); err != nil {
		t.Fatal(err)
	}
	if got := nn.do("lookup", "lookup %s", hx(topic[:])); strings.Contains(got, hx(goKP.Public[:])) || !strings.Contains(got, hx(nodeKP.Public[:])) {
		t.Fatalf("node lookup after go unannounce: %s", got)
	}
	nn.do("unannounced", "unannounce %s %s", hx(topic[:]), seedHex(0x22))
	if got := goLookup(t, ctx, g, topic); len(got) != 0 {
		t.Fatalf("go lookup after both unannounced: %v", got)
	}

	// Self-announce: FIND_PEER both ways.
	if err := g.Announce(ctx, Hash(goKP.Public[:]), goKP, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := nn.do("findpeer", "findpeer %s", hx(goKP.Public[:])); got != hx(goKP.Public[:]) {
		t.Fatalf("node findPeer: %s", got)
	}
	nn.do("announced", "announce %s %s", hxa(Hash(nodeKP.Public[:])), seedHex(0x22))
	fp := g.FindPeer(ctx, nodeKP.Public)
	found := false
	for r := range fp.All(ctx) {
		found = found || r.Peer.PublicKey == nodeKP.Public
	}
	if !found {
		t.Fatal("go findPeer did not find the node server")
	}

	// Mutable: Go puts, Node gets; Node puts a higher seq, Go gets it.
	if err := g.MutablePut(ctx, goKP, []byte("go v1"), 1); err != nil {
		t.Fatal(err)
	}
	if got := nn.do("mget", "mget %s 0", hx(goKP.Public[:])); got != "1 "+hx([]byte("go v1")) {
		t.Fatalf("node mget: %s", got)
	}
	nn.do("mput", "mput %s 2 %s", seedHex(0x11), hx([]byte("node v2")))
	res, err := g.MutableGet(ctx, goKP.Public, 0, true)
	if err != nil || res.Seq != 2 || string(res.Value) != "node v2" {
		t.Fatalf("go mget: %+v %v", res, err)
	}
	// Sequence rules at a Go node, checked by Node, and at Node nodes,
	// checked by Go.
	to := goStore.LocalAddr().String()
	if got := nn.do("raw", "rawmput %s %s 1 %s", to, seedHex(0x11), hx([]byte("old"))); got != "17 null" {
		t.Fatalf("lower seq at a go node: %s", got)
	}
	if got := nn.do("raw", "rawmput %s %s 2 %s", to, seedHex(0x11), hx([]byte("other"))); got != "16 null" {
		t.Fatalf("reused seq at a go node: %s", got)
	}
	if got := nn.do("raw", "rawmput %s %s 2 %s", to, seedHex(0x11), hx([]byte("node v2"))); got != "0 null" {
		t.Fatalf("same seq and value at a go node: %s", got)
	}
	// Every node refuses: those holding seq 2 with SEQ_TOO_LOW, and any
	// that Node's put of seq 2 did not reach (its closest set can differ
	// from ours) still hold seq 1 "go v1" and answer SEQ_REUSED.
	if err := g.MutablePut(ctx, goKP, []byte("old"), 1); !errors.Is(err, ErrSeqTooLow) && !errors.Is(err, ErrSeqReused) {
		t.Fatalf("go put of a lower seq: %v", err)
	}
	if got := nn.do("mget", "mget %s 3", hx(goKP.Public[:])); got != "null" {
		t.Fatalf("node mget seq 3: %s", got)
	}

	// Immutable both ways.
	h, err := g.ImmutablePut(ctx, []byte("from go"))
	if err != nil {
		t.Fatal(err)
	}
	if got := nn.do("iget", "iget %s", hx(h[:])); got != hx([]byte("from go")) {
		t.Fatalf("node iget: %s", got)
	}
	nh := nn.do("iput", "iput %s", hx([]byte("from node")))
	var target [32]byte
	hex.Decode(target[:], []byte(nh))
	v, err := g.ImmutableGet(ctx, target)
	if err != nil || string(v) != "from node" {
		t.Fatalf("go iget: %q %v", v, err)
	}

	// A forged announce and a wrong-hash immutable put get silence from a
	// Go node, as from the reference.
	bad := (&wire.Announce{Peer: &wire.Peer{PublicKey: nodeKP.Public}, Signature: &[64]byte{1}}).Append(nil)
	if got := nn.do("raw", "raw 4 %s %s %s", to, hx(topic[:]), hx(bad)); got != "timeout" {
		t.Fatalf("forged announce: %s", got)
	}
	if got := nn.do("raw", "raw 8 %s %s %s", to, hx(topic[:]), hx([]byte("x"))); got != "timeout" {
		t.Fatalf("wrong-hash immutable: %s", got)
	}
}

var _ = key.Size

// TestInteropGoBootstrap: Node nodes join a network whose bootstrap node
// is a Go node.
func TestInteropGoBootstrap(t *testing.T) {
	nodetest.Require(t)
	tn := testnet(t, 4)
	nn := startNodeNet(t, "testnet", "4", tn.Bootstrap[0])
	// A Go node started after the Node nodes, so its table holds both.
	ctx := testCtx(t, 30*time.Second)
	more, err := Testnet(ctx, 2, &TestnetOptions{Bootstrap: tn.Bootstrap, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { more.Close() })
	mixedChecks(t, more.Nodes[1], tn.Nodes[0], nn)
}

// TestInteropNodeBootstrap: Go nodes join a network whose bootstrap node
// is a Node node.
func TestInteropNodeBootstrap(t *testing.T) {
	nodetest.Require(t)
	nn := startNodeNet(t, "testnet", "4")
	ctx := testCtx(t, 30*time.Second)
	tn, err := Testnet(ctx, 4, &TestnetOptions{Bootstrap: []string{nn.boot}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	for _, n := range tn.Nodes {
		if s := n.State(); s.Ephemeral {
			t.Fatalf("go node %v still ephemeral", n.LocalAddr())
		}
	}
	mixedChecks(t, tn.Nodes[3], tn.Nodes[1], nn)
}

func hxa(b [32]byte) string { return hx(b[:]) }
