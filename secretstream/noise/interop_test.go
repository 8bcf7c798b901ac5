package noise

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// TestLiveAgainstNode runs real handshakes with random ephemerals, Go on
// one side and noise-handshake + noise-curve-ed on the other, for both
// roles and both patterns (IK with hyperdht's prologue, XX with none). The
// messages travel as hex lines over the script's stdin and stdout; each
// side checks the other's payloads, and the Node side's hash, keys and
// view of the Go key are compared at the end.
func TestLiveAgainstNode(t *testing.T) {
	goKP, nodeKP := seeded(11), seeded(12)
	nodeSeed := nodeKP.Seed()
	for _, pat := range []Pattern{IK, XX} {
		for _, goInit := range []bool{true, false} {
			t.Run(fmt.Sprintf("%v/go-initiator=%v", pat, goInit), func(t *testing.T) {
				args := []string{"peer", "responder", pat.String(), fmt.Sprintf("%x", nodeSeed[:])}
				if !goInit {
					args[1] = "initiator"
					if pat == IK {
						args = append(args, goKP.Public.String())
					}
				}
				p := nodetest.Start(t, "noise-vectors.js", args...)
				cfg := Config{Pattern: pat, Initiator: goInit, KeyPair: goKP}
				if pat == IK {
					cfg.Prologue = NSPeerHandshake[:]
					if goInit {
						cfg.RemoteKey = nodeKP.Public
					}
				}
				h, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				gi, ni := 0, 0
				for m := range len(layouts[pat]) {
					if (m%2 == 0) == goInit {
						msg, err := h.WriteMessage(nil, fmt.Appendf(nil, "go-%d", gi))
						if err != nil {
							t.Fatal(err)
						}
						fmt.Fprintf(p.Stdin(), "%x\n", msg)
						if got := p.Expect("payload ", 10*time.Second); got != fmt.Sprintf("go-%d", gi) {
							t.Fatalf("Node read payload %q", got)
						}
						gi++
					} else {
						pl, err := h.ReadMessage(nil, unhex(t, p.Expect("msg ", 10*time.Second)))
						if err != nil {
							t.Fatal(err)
						}
						if string(pl) != fmt.Sprintf("node-%d", ni) {
							t.Fatalf("Go read payload %q", pl)
						}
						ni++
					}
				}
				res, err := h.Result()
				if err != nil {
					t.Fatal(err)
				}
				f := strings.Fields(p.Expect("done ", 10*time.Second))
				if len(f) != 4 {
					t.Fatalf("Node printed %q", f)
				}
				// Node's tx is Go's rx and the other way round.
				if f[0] != fmt.Sprintf("%x", res.Hash) || f[1] != fmt.Sprintf("%x", res.Rx) || f[2] != fmt.Sprintf("%x", res.Tx) {
					t.Fatalf("keys differ from Node's:\nnode %q\n  go hash %x tx %x rx %x", f, res.Hash, res.Tx, res.Rx)
				}
				if f[3] != goKP.Public.String() || res.RemotePublicKey != nodeKP.Public {
					t.Fatalf("identities: Node saw %s, Go saw %s", f[3], res.RemotePublicKey)
				}
			})
		}
	}
}

// TestLiveNodeRefusesWrongKey: a Go IK initiator that dials the wrong
// server key is refused by Node, as a Node initiator's would be by Go
// (TestBadMessages).
func TestLiveNodeRefusesWrongKey(t *testing.T) {
	nodeSeed := seeded(12).Seed()
	p := nodetest.Start(t, "noise-vectors.js", "peer", "responder", "IK", fmt.Sprintf("%x", nodeSeed[:]))
	h, err := New(Config{Pattern: IK, Initiator: true, KeyPair: seeded(11), RemoteKey: seeded(13).Public, Prologue: NSPeerHandshake[:]})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := h.WriteMessage(nil, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(p.Stdin(), "%x\n", msg)
	if got := p.Expect("error ", 10*time.Second); got == "" {
		t.Fatal("Node printed an empty error")
	}
}

// TestLiveSizeLimit: noise-handshake takes an IK message 1 whose payload
// ciphertext is exactly 65535 bytes (the message is 80 bytes longer), and
// refuses one a byte longer — the rule ReadMessage and WriteMessage apply.
// The too-long one is built with flynn/noise directly, which WriteMessage
// would refuse to do.
func TestLiveSizeLimit(t *testing.T) {
	nodeKP, goKP := seeded(12), seeded(11)
	nodeSeed := nodeKP.Seed()
	for _, n := range []int{MaxCiphertext - tagLen, MaxCiphertext - tagLen + 1} {
		p := nodetest.Start(t, "noise-vectors.js", "peer", "responder", "IK", fmt.Sprintf("%x", nodeSeed[:]))
		hs, err := noise.NewHandshakeState(noise.Config{
			CipherSuite: suite, Pattern: noise.HandshakeIK, Initiator: true, Prologue: NSPeerHandshake[:],
			StaticKeypair: noise.DHKey{Private: goKP.Private, Public: goKP.Public[:]},
			PeerStatic:    nodeKP.Public[:],
		})
		if err != nil {
			t.Fatal(err)
		}
		msg, _, _, err := hs.WriteMessage(nil, bytes.Repeat([]byte("a"), n))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(p.Stdin(), "%x\n", msg)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		line, err := p.Line(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("payload of %d, message of %d bytes: Node says %.90q", n, len(msg), line)
		ok := strings.HasPrefix(line, "payload ") && len(line) == len("payload ")+n
		if ok != (n+tagLen <= MaxCiphertext) {
			t.Errorf("payload of %d (message of %d bytes): Node said %.80q", n, len(msg), line)
		}
		// Go reads the same message the same way.
		r, _ := New(Config{Pattern: IK, KeyPair: nodeKP, Prologue: NSPeerHandshake[:]})
		if _, err := r.ReadMessage(nil, msg); (err == nil) != ok {
			t.Errorf("payload of %d: Go read error %v, Node accepted=%v", n, err, ok)
		}
	}
}
