package dhtrelay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/secretstream/noise"
)

const interopBytes = 4 << 20

func seedHex(kp key.KeyPair) string { s := kp.Seed(); return fmt.Sprintf("%x", s[:]) }

// nodeDial runs a Node relayed client that dials pk through url and
// checks the echo.
func nodeDial(t *testing.T, url string, pk key.PublicKey, extra ...string) {
	t.Helper()
	nodeEcho(t, 3, 1, append([]string{"dhtrelay-node.js", "dial", url, pk.String(), fmt.Sprint(interopBytes)}, extra...)...)
}

// dialEach dials every key through c and round-trips interopBytes.
func dialEach(t *testing.T, ctx context.Context, c *Client, pks ...key.PublicKey) (streamSecrets [][]byte) {
	t.Helper()
	for _, pk := range pks {
		dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		conn, err := c.Dial(dctx, pk, nil)
		cancel()
		if err != nil {
			t.Fatalf("dial %s: %v", pk, err)
		}
		roundTrip(t, conn, interopBytes)
		conn.Close()
		if sc, ok := conn.(secured); ok {
			streamSecrets = append(streamSecrets, streamKeys(t, sc.Conn)...)
		}
	}
	return streamSecrets
}

// nodeEcho runs a Node client script that prints
// "result … <sha256 sent> <sha256 received> …" in n fields, the sent sum
// at sent and the received one after it, and checks the two agree.
func nodeEcho(t *testing.T, n, sent int, script ...string) {
	t.Helper()
	p := nodetest.Start(t, script[0], script[1:]...)
	line, err := p.Line(testCtx(t, 90*time.Second))
	if err != nil {
		t.Fatalf("%s: %v\n%s", script[0], err, p.Stderr())
	}
	f := strings.Fields(line)
	if len(f) != n || f[0] != "result" || f[sent] != f[sent+1] {
		t.Fatalf("%s: %q\n%s", script[0], line, p.Stderr())
	}
}

// nodeServer starts hyperdht-peer.js's echo server on a fresh key.
func nodeServer(t *testing.T, boot string) key.PublicKey {
	t.Helper()
	kp := newKey(t)
	p := nodetest.Start(t, "hyperdht-peer.js", "server", boot, seedHex(kp))
	p.Expect("listening ", 60*time.Second)
	return kp.Public
}

// interopNet is a loopback testnet with a relay node, a Go echo server
// (goPK) on its own node and a Node hyperdht echo server (nodePK).
type interopNet struct {
	boot              string
	relayNode, goNode *dht.Node
	goPK, nodePK      key.PublicKey
}

func newInteropNet(t *testing.T, ctx context.Context) *interopNet {
	t.Helper()
	nodetest.Require(t)
	tn := testnet(t, 3)
	in := &interopNet{boot: strings.Join(tn.Bootstrap, ","), relayNode: peerNode(t, tn), goNode: peerNodeLogged(t, tn, flightRecorder(t, "the Go echo server's node"))}
	in.goPK, in.nodePK = echoListener(t, ctx, in.goNode), nodeServer(t, in.boot)
	t.Logf("Go echo server %s, Node echo server %s", in.goPK, in.nodePK)
	return in
}

// TestInteropNodeClientsGoRelay: Node relayed clients through a Go relay
// reach a Go and a Node hyperdht server, and serve a Go UDP client.
func TestInteropNodeClientsGoRelay(t *testing.T) {
	ctx := testCtx(t, 240*time.Second)
	in := newInteropNet(t, ctx)
	relayNode, goServer, skp, nodePK := in.relayNode, in.goNode, in.goPK, in.nodePK
	for _, tr := range []string{"tcp", "ws"} {
		t.Run(tr, func(t *testing.T) {
			_, url := goRelay(t, relayNode, tr, ServerOptions{})
			t.Run("GoServer", func(t *testing.T) { nodeDial(t, url, skp) })
			t.Run("NodeServer", func(t *testing.T) { nodeDial(t, url, nodePK) })
			t.Run("NodeListens", func(t *testing.T) {
				kp := newKey(t)
				p := nodetest.Start(t, "dhtrelay-node.js", "listen", url, seedHex(kp))
				p.Expect("listening ", 60*time.Second)
				c, err := goServer.Dial(ctx, kp.Public, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				roundTrip(t, c, interopBytes)
			})
		})
	}
}

// TestInteropGoClientNodeRelay: a Go relayed client through the Node
// relay reaches a Go and a Node hyperdht server and serves a Go UDP
// client; non-custodial, the relay never receives its secret key (seed or
// scalar), the dials' static DH secrets or their secret-stream keys.
func TestInteropGoClientNodeRelay(t *testing.T) {
	ctx := testCtx(t, 240*time.Second)
	in := newInteropNet(t, ctx)
	boot, goServer, skp, nodePK := in.boot, in.goNode, in.goPK, in.nodePK
	for _, tr := range []string{"tcp", "ws"} {
		t.Run(tr, func(t *testing.T) {
			for _, custodial := range []bool{true, false} {
				name := "custodial"
				if !custodial {
					name = "noncustodial"
				}
				t.Run(name, func(t *testing.T) {
					ckp := newKey(t)
					relay := nodetest.Start(t, "dhtrelay-node.js", "relay", tr, boot, seedHex(ckp))
					port := strings.TrimSpace(relay.Expect("listening ", 60*time.Second))
					url := tr + "://127.0.0.1:" + port
					c := dialClient(t, url, ClientOptions{KeyPair: ckp, NonCustodial: !custodial, Logger: flightRecorder(t, "the Go relayed client")})
					// Besides the seed the relay was told of: the scalars,
					// the static DH secrets of both dials and, when the
					// client ran the handshakes, their stream keys.
					secrets := append(dialEach(t, ctx, c, skp, nodePK), scalars(t, ckp)...)
					for _, pk := range []key.PublicKey{skp, nodePK} {
						ss, err := noise.DH(ckp.Private, pk[:])
						if err != nil {
							t.Fatal(err)
						}
						secrets = append(secrets, ss)
					}
					if !custodial && len(secrets) != 2*2+2+2 {
						t.Fatalf("%d secrets to look for, want 8: the dials' stream keys are missing", len(secrets))
					}
					lkp := newKey(t)
					rl, err := c.Listen(ctx, lkp, nil)
					if custodial {
						if err != nil {
							t.Fatal(err)
						}
						echoConns(rl.Accept)
						udpEcho(t, ctx, goServer, lkp.Public, interopBytes)
						rl.Close()
					} else if !errors.Is(err, ErrNotAnnounced) {
						// The reference confirms a non-custodial listen
						// whose announce it cannot sign (package doc):
						// the listen must fail rather than look fine.
						if err == nil {
							rl.Close()
						}
						t.Fatalf("non-custodial listen through the Node relay: %v, want ErrNotAnnounced", err)
					} else {
						t.Logf("non-custodial listen refused: %v", err)
					}
					hexes := make([]string, len(secrets))
					for i, sec := range secrets {
						hexes[i] = fmt.Sprintf("%x", sec)
					}
					fmt.Fprintln(relay.Stdin(), "report", strings.Join(hexes, ","))
					var frames, seen int
					line := relay.Expect("frames ", 10*time.Second)
					if _, err := fmt.Sscanf(line, "%d secret %d", &frames, &seen); err != nil {
						t.Fatalf("report %q: %v", line, err)
					}
					t.Logf("relay received %d frames, %d holding one of the client's %d secrets", frames, seen, len(secrets)+1)
					if frames == 0 {
						t.Fatal("the relay saw no frames")
					}
					if custodial && seen == 0 {
						t.Fatal("custodial: the watch did not see the secret key (the check is blind)")
					}
					if !custodial && seen != 0 {
						t.Fatalf("non-custodial: the relay received the seed, a scalar, a DH secret or a stream key in %d frames", seen)
					}
				})
			}
		})
	}
}

// nodeUDPClient runs a Node hyperdht client (over UDP) that dials pk and
// checks the echo.
func nodeUDPClient(t *testing.T, boot string, pk key.PublicKey) {
	t.Helper()
	// result <ms to open> <sha256 sent> <sha256 received> <remote>
	nodeEcho(t, 5, 2, "hyperdht-peer.js", "client", boot, pk.String(), fmt.Sprint(interopBytes), "1")
}

// TestInteropNonCustodialGoRelay: non-custodial clients through a Go
// relay, which never receives their secret keys: a Go relayed client and
// a Node @hyperswarm/dht-relay client each dial a Go and a Node hyperdht
// server and listen for a Go and a Node UDP client, 4 MiB each way,
// SHA-256 compared, over both transports.
func TestInteropNonCustodialGoRelay(t *testing.T) {
	ctx := testCtx(t, 300*time.Second)
	in := newInteropNet(t, ctx)
	boot, relayNode, goServer, skp, nodePK := in.boot, in.relayNode, in.goNode, in.goPK, in.nodePK
	for _, tr := range []string{"tcp", "ws"} {
		t.Run(tr, func(t *testing.T) {
			_, url := goRelay(t, relayNode, tr, ServerOptions{})
			t.Run("GoClient", func(t *testing.T) {
				c := dialClient(t, url, ClientOptions{NonCustodial: true})
				dialEach(t, ctx, c, skp, nodePK)
				lkp := newKey(t)
				rl, err := c.Listen(ctx, lkp, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer rl.Close()
				echoConns(rl.Accept)
				udpEcho(t, ctx, goServer, lkp.Public, interopBytes)
				nodeUDPClient(t, boot, lkp.Public)
			})
			t.Run("NodeClient", func(t *testing.T) {
				nodeDial(t, url, skp, "noncustodial")
				nodeDial(t, url, nodePK, "noncustodial")
				lkp := newKey(t)
				p := nodetest.Start(t, "dhtrelay-node.js", "listen", url, seedHex(lkp), "noncustodial")
				p.Expect("listening ", 60*time.Second)
				udpEcho(t, ctx, goServer, lkp.Public, interopBytes)
				nodeUDPClient(t, boot, lkp.Public)
			})
		})
	}
}

// TestInteropNodeNonCustodialSecret: a Node @hyperswarm/dht-relay client
// listening non-custodially through a Go relay is reached by a UDP client,
// and no frame the relay received holds its seed; custodial, the same
// check finds it.
func TestInteropNodeNonCustodialSecret(t *testing.T) {
	nodetest.Require(t)
	tn := testnet(t, 3)
	relayNode := peerNode(t, tn)
	client := peerNode(t, tn)
	ctx := testCtx(t, 120*time.Second)
	for _, custodial := range []bool{true, false} {
		name := map[bool]string{true: "custodial", false: "noncustodial"}[custodial]
		t.Run(name, func(t *testing.T) {
			_, url, rec := recordingRelay(t, relayNode)
			lkp := newKey(t)
			args := []string{"listen", url, seedHex(lkp)}
			if !custodial {
				args = append(args, "noncustodial")
			}
			p := nodetest.Start(t, "dhtrelay-node.js", args...)
			p.Expect("listening ", 60*time.Second)
			marker := make([]byte, 32)
			rand.Read(marker)
			uc, err := client.Dial(ctx, lkp.Public, nil)
			if err != nil {
				t.Fatal(err)
			}
			markedRoundTrip(t, uc, marker, interopBytes)
			uc.Close()
			seed := lkp.Seed()
			r := rec()
			in, out := r.count(seed[:])
			plainIn, plainOut := r.count(marker)
			nIn, _, _, _ := r.stats()
			t.Logf("relay received %d frames, %d with the seed; plaintext in %d received, %d sent frames", nIn, in+out, plainIn, plainOut)
			if custodial != (in+out > 0) || custodial != (plainIn > 0 && plainOut > 0) {
				t.Fatalf("%s: %d frames with the seed, plaintext in %d+%d frames", name, in+out, plainIn, plainOut)
			}
		})
	}
}
