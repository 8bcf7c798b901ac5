package secretstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/secretstream/noise"
)

// TestInteropNode runs Go against Node's @hyperswarm/secret-stream over TCP
// in both roles and both modes (the stream's own XX handshake; hyperdht
// mode with keys from an IK handshake between Go's noise package and Node's
// noise-handshake; and "keys", hyperdht mode with random keys handed to
// both sides, which needs no handshake at all). Each direction carries interopSize bytes in
// random-sized writes at the same time; the SHA-256 of what arrived must
// equal what was sent, and Node must not have seen an empty chunk.
// interopSize is what each direction carries (64 MiB also under -race:
// the crypto is assembly and the whole test takes a few seconds).
const interopSize = 64 << 20

func TestInteropNode(t *testing.T) {
	nodetest.Require(t)
	for _, mode := range []string{"keys", "xx", "ik"} {
		for _, goInit := range []bool{true, false} {
			name := mode + "/go-responder"
			if goInit {
				name = mode + "/go-initiator"
			}
			t.Run(name, func(t *testing.T) { runInterop(t, mode, goInit) })
		}
	}
}

func runInterop(t *testing.T, mode string, goInit bool) {
	conntest.CheckGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	var goSeed, nodeSeed key.Seed
	rand.Read(goSeed[:])
	rand.Read(nodeSeed[:])
	goKP, nodeKP := key.FromSeed(goSeed), key.FromSeed(nodeSeed)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	role := "initiator"
	if goInit {
		role = "responder"
	}
	args := []string{"--port", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), "--role", role, "--mode", mode,
		"--seed", hex.EncodeToString(nodeSeed[:]), "--remote", hex.EncodeToString(goKP.Public[:]),
		"--size", strconv.Itoa(interopSize)}
	var given noise.Result
	if mode == "keys" {
		ini, resp := fakeResults(t)
		goSide, nodeSide := resp, ini
		if goInit {
			goSide, nodeSide = ini, resp
		}
		goSide.PublicKey, goSide.RemotePublicKey = goKP.Public, nodeKP.Public
		given = goSide
		args = append(args, "--tx", hex.EncodeToString(nodeSide.Tx[:]), "--rx", hex.EncodeToString(nodeSide.Rx[:]),
			"--hash", hex.EncodeToString(nodeSide.Hash[:]))
	}
	p := nodetest.Start(t, "secretstream-peer.js", args...)
	if got := p.Expect("pubkey ", 20*time.Second); got != hex.EncodeToString(nodeKP.Public[:]) {
		t.Fatalf("node public key %s", got)
	}
	prologue, err := hex.DecodeString(p.Expect("prologue ", 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	opts := Options{IsInitiator: goInit, KeyPair: goKP}
	if mode == "keys" {
		opts.Handshake = &given
		opts.KeepAlive = 5 * time.Second
	}
	if mode == "ik" {
		res := ikHandshake(t, p, goInit, goKP, nodeKP.Public, prologue)
		opts.Handshake = &res
		opts.KeepAlive = 5 * time.Second // as hyperdht sets
	}

	ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second))
	raw, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	c, err := New(raw, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() }) // bound the transfer
	defer stop()
	if err := c.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	if c.RemotePublicKey() != nodeKP.Public || c.PublicKey() != goKP.Public {
		t.Fatalf("keys: remote %x public %x", c.RemotePublicKey(), c.PublicKey())
	}

	type sendResult struct {
		sum [32]byte
		err error
	}
	sent := make(chan sendResult, 1)
	go func() {
		sum, err := conntest.Transfer(c, interopSize, 7, 256<<10)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- sendResult{sum, err}
	}()
	n, recvSum, err := conntest.Drain(c)
	if err != nil {
		t.Fatalf("reading: %v (after %d bytes)", err, n)
	}
	s := <-sent
	if s.err != nil {
		t.Fatalf("writing: %v", s.err)
	}

	lines := collect(ctx, t, p)
	hash := c.HandshakeHash()
	if want := hex.EncodeToString(goKP.Public[:]) + " " + hex.EncodeToString(hash[:]); lines["handshake"] != want {
		t.Errorf("node handshake line %q, want %q", lines["handshake"], want)
	}
	if lines["sent"] != hex.EncodeToString(recvSum[:]) || n != int64(interopSize) {
		t.Errorf("node→go: received %d bytes hashing %x, node sent %s", n, recvSum, lines["sent"])
	}
	if want := fmt.Sprintf("%d %x", interopSize, s.sum); lines["recv"] != want {
		t.Errorf("go→node: node received %q, want %q", lines["recv"], want)
	}
	if lines["empty"] != "0" {
		t.Errorf("node saw %s empty chunks", lines["empty"])
	}
	c.Close()
	if err := p.Wait(ctx); err != nil {
		t.Errorf("node exited: %v", err)
	}
}

// collect reads the script's result lines up to "done", keyed by first word.
func collect(ctx context.Context, t *testing.T, p *nodetest.Proc) map[string]string {
	t.Helper()
	m := map[string]string{}
	for {
		l, err := p.Line(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k, v, _ := strings.Cut(l, " ")
		if k == "done" {
			return m
		}
		m[k] = v
	}
}

// ikHandshake runs Go's IK handshake against the script's, passing the two
// messages through its stdin/stdout as hyperdht would through the DHT.
func ikHandshake(t *testing.T, p *nodetest.Proc, goInit bool, kp key.KeyPair, remote key.PublicKey, prologue []byte) noise.Result {
	t.Helper()
	cfg := noise.Config{Pattern: noise.IK, Initiator: goInit, KeyPair: kp, Prologue: prologue}
	if goInit {
		cfg.RemoteKey = remote
	}
	h, err := noise.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if goInit {
		m1, err := h.WriteMessage(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(p.Stdin(), "ik1 %x\n", m1)
		m2, err := hex.DecodeString(p.Expect("ik2 ", 20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.ReadMessage(nil, m2); err != nil {
			t.Fatalf("IK message 2: %v", err)
		}
	} else {
		m1, err := hex.DecodeString(p.Expect("ik1 ", 20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.ReadMessage(nil, m1); err != nil {
			t.Fatalf("IK message 1: %v", err)
		}
		m2, err := h.WriteMessage(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(p.Stdin(), "ik2 %x\n", m2)
	}
	res, err := h.Result()
	if err != nil {
		t.Fatal(err)
	}
	if res.RemotePublicKey != remote || res.IsInitiator != goInit {
		t.Fatalf("IK result: remote %x initiator %v", res.RemotePublicKey, res.IsInitiator)
	}
	return res
}
