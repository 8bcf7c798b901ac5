package dht

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
)

// TestBadInput sends malformed, forged, mis-targeted and token-less
// requests straight to a Go node: each gets the reference's answer
// (silence, INVALID_TOKEN, SEQ_*), nothing panics, and storage stays
// within its bounds.
func TestBadInput(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	tn, err := Testnet(ctx, 3, &TestnetOptions{Logger: testLogger(), Config: &Config{MaxSize: 16}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	srv, cli := tn.Nodes[0], tn.Nodes[2].RPC()
	to := srv.LocalAddr()
	kp := seedKey(9)
	topic := Hash([]byte("bad input"))
	self := Hash(kp.Public[:])

	send := func(cmd wire.Command, target [32]byte, value []byte, tok *[32]byte) (*rpc.Response, error) {
		t.Helper()
		id := rpc.ID(target)
		return cli.Request(ctx, to, rpc.RequestOptions{Command: uint64(cmd), Target: &id, Value: value, Token: tok, NoRetry: true, Timeout: 300 * time.Millisecond})
	}
	token := func(target [32]byte) *[32]byte {
		r, err := send(wire.CmdLookup, target, nil, nil)
		if err != nil || r.Token == nil {
			t.Fatalf("no token: %v", err)
		}
		return r.Token
	}
	silent := func(what string, r *rpc.Response, err error) {
		t.Helper()
		if !errors.Is(err, rpc.ErrTimeout) {
			t.Errorf("%s: want silence, got %+v %v", what, r, err)
		}
	}
	tok := token(topic)
	srvID, _ := srv.RPC().ID()
	signed := func(ns [32]byte, target [32]byte, p *wire.Peer, tk *[32]byte) []byte {
		a := &wire.Announce{Peer: p}
		var sig [64]byte
		if ns == wire.NSAnnounce {
			sig = wire.SignAnnounce(kp, target, srvID, tk[:], a)
		} else {
			sig = wire.SignUnannounce(kp, target, srvID, tk[:], a)
		}
		a.Signature = &sig
		return a.Append(nil)
	}
	good := signed(wire.NSAnnounce, topic, &wire.Peer{PublicKey: kp.Public}, tok)

	// Malformed values of every storage command: silence.
	for _, cmd := range []wire.Command{wire.CmdAnnounce, wire.CmdUnannounce, wire.CmdMutablePut, wire.CmdMutableGet} {
		for i, v := range [][]byte{{}, {0xff}, {0xfd, 0xff}, {0x01, 0x01}, make([]byte, 200)} {
			if cmd == wire.CmdMutableGet && i > 2 {
				break // a bare uint with trailing bytes is a valid MUTABLE_GET
			}
			r, err := send(cmd, topic, v, tok)
			silent(cmd.String()+" malformed", r, err)
		}
	}
	// Forged, replayed (signed for another node id / token), truncated.
	forged := append([]byte(nil), good...)
	forged[len(forged)-1] ^= 1
	r, err := send(wire.CmdAnnounce, topic, forged, tok)
	silent("forged announce", r, err)
	other := Hash([]byte("other topic"))
	r, err = send(wire.CmdAnnounce, other, good, token(other))
	silent("announce signed for another topic", r, err)
	r, err = send(wire.CmdAnnounce, topic, good[:len(good)-1], tok)
	silent("truncated announce", r, err)
	// No token: silence; a wrong token: dht-rpc's INVALID_TOKEN.
	r, err = send(wire.CmdAnnounce, topic, good, nil)
	silent("announce without token", r, err)
	r, err = send(wire.CmdAnnounce, topic, good, &[32]byte{1})
	if err != nil || r.Error != rpc.CodeInvalidToken {
		t.Errorf("wrong token: %+v %v", r, err)
	}
	// The good one is stored, and its Forward appears only for self-announces.
	if r, err = send(wire.CmdAnnounce, topic, good, tok); err != nil || r.Error != 0 {
		t.Fatalf("good announce: %+v %v", r, err)
	}
	stok := token(self)
	if r, err = send(wire.CmdAnnounce, self, signed(wire.NSAnnounce, self, &wire.Peer{PublicKey: kp.Public}, stok), stok); err != nil || r.Error != 0 {
		t.Fatalf("self announce: %+v %v", r, err)
	}
	if f, ok := srv.Forward(self); !ok || f.Relay != tn.Nodes[2].LocalAddr() {
		t.Errorf("forward after self-announce: %+v %v", f, ok)
	}
	// An unannounce signed under the ANNOUNCE namespace is refused.
	r, err = send(wire.CmdUnannounce, topic, good, tok)
	silent("unannounce with an announce signature", r, err)

	// Mutable: wrong target, forged signature: silence; seq rules: codes.
	put := func(seq uint64, v string, target [32]byte, forge bool) (*rpc.Response, error) {
		p := &wire.MutablePutRequest{PublicKey: kp.Public, Seq: seq, Value: []byte(v), Signature: wire.SignMutable(kp, seq, []byte(v))}
		if forge {
			p.Signature[0] ^= 1
		}
		return send(wire.CmdMutablePut, target, p.Append(nil), token(target))
	}
	r, err = put(1, "x", topic, false)
	silent("mutable put to a wrong target", r, err)
	r, err = put(1, "x", self, true)
	silent("forged mutable put", r, err)
	if r, err = put(5, "five", self, false); err != nil || r.Error != 0 {
		t.Fatalf("mutable put: %+v %v", r, err)
	}
	if r, err = put(4, "four", self, false); err != nil || r.Error != uint64(wire.ErrorSeqTooLow) {
		t.Errorf("lower seq: %+v %v", r, err)
	}
	if r, err = put(5, "FIVE", self, false); err != nil || r.Error != uint64(wire.ErrorSeqReused) {
		t.Errorf("reused seq: %+v %v", r, err)
	}
	// Immutable with a target that is not the value's hash: silence.
	r, err = send(wire.CmdImmutablePut, topic, []byte("v"), tok)
	silent("immutable put to a wrong target", r, err)

	// The node's socket is a udx socket, which reads datagrams into
	// 2048-byte buffers as libudx does (UDX_SOCKET_PACKET_BUFFER_SIZE): a
	// 1.5 kB value is stored, a 60 kB one arrives truncated and is dropped,
	// exactly as a Node node drops it. Storage stays bounded by MaxSize
	// however much comes.
	mid := make([]byte, 1500)
	mt := Hash(mid)
	if r, err = send(wire.CmdImmutablePut, mt, mid, token(mt)); err != nil || r.Error != 0 {
		t.Fatalf("1.5 kB immutable: %+v %v", r, err)
	}
	big := make([]byte, 60000)
	bt := Hash(big)
	r, err = send(wire.CmdImmutablePut, bt, big, token(bt))
	silent("60 kB immutable (truncated by the 2 kB receive buffer)", r, err)
	for i := range 100 {
		v := []byte{byte(i), 1, 2, 3}
		h := Hash(v)
		if r, err = send(wire.CmdImmutablePut, h, v, token(h)); err != nil || r.Error != 0 {
			t.Fatalf("immutable %d: %+v %v", i, r, err)
		}
	}
	if s := srv.StoreStats(); s.Immutables > 16 {
		t.Errorf("immutables not bounded by MaxSize: %+v", s)
	}

	// Garbage datagrams at the socket: the node keeps serving.
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 200 {
		c.Write(append([]byte{0x03, byte(i)}, make([]byte, i)...))
	}
	// Liveness, not latency: the garbage queues ahead of this request on a
	// loaded CI machine, so it gets retries and a generous timeout.
	id := rpc.ID(topic)
	if _, err := cli.Request(ctx, to, rpc.RequestOptions{Command: uint64(wire.CmdLookup), Target: &id, Timeout: 2 * time.Second}); err != nil {
		t.Errorf("node stopped answering after garbage: %v", err)
	}
}

// TestEphemeralDeclines: an ephemeral node answers storage commands with
// UNKNOWN_COMMAND and closer nodes, as dht-rpc does for hyperdht.
func TestEphemeralDeclines(t *testing.T) {
	tn := testnet(t, 3)
	ctx := testCtx(t, 30*time.Second)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eph, err := New(Config{Conn: conn, Bootstrap: tn.Bootstrap, Mode: rpc.Ephemeral, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer eph.Close()
	if err := eph.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	id := rpc.ID(Hash([]byte("x")))
	to := netip.MustParseAddrPort(conn.LocalAddr().String())
	r, err := tn.Nodes[1].RPC().Request(ctx, to, rpc.RequestOptions{Command: uint64(wire.CmdLookup), Target: &id})
	if err != nil || r.Error != rpc.CodeUnknownCommand || len(r.CloserNodes) == 0 {
		t.Fatalf("ephemeral LOOKUP: %+v %v", r, err)
	}
	// Its client calls still work through the persistent nodes.
	if _, err := eph.ImmutablePut(ctx, []byte("eph")); err != nil {
		t.Fatal(err)
	}
	if v, err := tn.Nodes[0].ImmutableGet(ctx, Hash([]byte("eph"))); err != nil || string(v) != "eph" {
		t.Fatalf("get: %q %v", v, err)
	}
	eph.Close()
	eph.Close() // idempotent
	if _, err := eph.ImmutableGet(context.Background(), id); err == nil {
		t.Fatal("call on a closed node succeeded")
	}
}
