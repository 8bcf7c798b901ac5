package dhtrelay

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/protomux"
	"github.com/keytunnel/keytunnel/secretstream/noise"
)

// pipeClient starts a Client on one end of an in-memory pipe (wrapped by
// wrap, when not nil) and plays the relay on the other, past the client's
// handshake.
func pipeClient(t *testing.T, wrap func(protomux.Framed) protomux.Framed, opts ClientOptions) (*Client, *msgClient) {
	t.Helper()
	a, b := protomux.Pipe()
	if wrap != nil {
		a = wrap(a)
	}
	c, err := NewClient(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	relay := newMsgClient(t, b)
	relay.expect(t, TypeHandshake, 5*time.Second)
	return c, relay
}

// TestDialRetriesAfterRelayRace plays the Node relay whose two
// PEER_HANDSHAKE replies raced (see Client.noteRaceLocked): it asks the
// client twice to read the server's reply and never opens the stream. The
// client answers once, gives the dial up after relayRaceGrace and connects
// again; a dial without the race is not given up.
func TestDialRetriesAfterRelayRace(t *testing.T) {
	defer func(d time.Duration) { relayRaceGrace = d }(relayRaceGrace)
	relayRaceGrace = 300 * time.Millisecond
	skp := newKey(t)
	c, relay := pipeClient(t, nil, ClientOptions{KeyPair: newKey(t), NonCustodial: true, Logger: flightRecorder(t, "the relayed client")})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Dial(ctx, skp.Public, nil)
		done <- err
	}()

	// next returns the client's next message other than a ping, or nil
	// when none comes within d.
	next := func(d time.Duration) Message {
		timeout := time.After(d)
		for {
			select {
			case m := <-relay.msgs:
				if m.Type() != TypePing {
					return m
				}
			case <-timeout:
				return nil
			}
		}
	}
	// handshake runs the relay's side of one connect's Noise handshake
	// as the server skp, reading the server's reply twice when raced.
	handshake := func(id uint32, raced bool) uint32 {
		t.Helper()
		conn, ok := next(5 * time.Second).(Connect)
		if !ok || conn.RemotePublicKey != skp.Public {
			t.Fatalf("no connect to the server: %+v", conn)
		}
		relay.send(t, NoiseSend{IsInitiator: true, ID: id, RemoteStreamAlias: conn.Alias, Payload: []byte("client payload")})
		r1, ok := next(5 * time.Second).(NoiseReply)
		if !ok || r1.ID != id || r1.Complete {
			t.Fatalf("first noise reply %+v", r1)
		}
		hs, err := noise.New(noise.Config{Pattern: noise.IK, Prologue: wire.NSPeerHandshake[:], KeyPair: skp})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hs.ReadMessage(nil, r1.Payload); err != nil {
			t.Fatal(err)
		}
		msg2, err := hs.WriteMessage(nil, []byte("server payload"))
		if err != nil {
			t.Fatal(err)
		}
		relay.send(t, NoiseReceive{IsInitiator: true, ID: id, Payload: msg2})
		if raced {
			relay.send(t, NoiseReceive{IsInitiator: true, ID: id, Payload: msg2})
		}
		r2, ok := next(5 * time.Second).(NoiseReply)
		if !ok || r2.ID != id || !r2.Complete || string(r2.Payload) != "server payload" {
			t.Fatalf("second noise reply %+v", r2)
		}
		return conn.Alias
	}
	first := handshake(1, true)
	// One answer only (a second would crash the Node relay), then, once
	// no open came within the grace, the dial again.
	start := time.Now()
	second := handshake(2, false)
	if waited := time.Since(start); waited < relayRaceGrace/2 {
		t.Errorf("connected again after %v, before the grace of %v", waited, relayRaceGrace)
	}
	if second == first {
		t.Errorf("the second connect reused alias %d", first)
	}
	// Without the race the dial waits for its open as long as its ctx.
	if m := next(4 * relayRaceGrace); m != nil {
		t.Fatalf("a dial without the race sent %s %+v", m.Type(), m)
	}
	// The first stream's late open is closed at once, the dial being
	// given up.
	relay.send(t, Open{Alias: 100, RemoteAlias: first, HandshakeID: 1})
	if d, ok := next(5 * time.Second).(Destroy); !ok || !d.Paired || d.Alias != first {
		t.Errorf("the late open of the given up dial: %+v, want its destroy", d)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("dial: %v, want context.Canceled", err)
	}
}

// heldWrites holds the client's writes while gate is locked, so that its
// write queue fills as behind a slow relay.
type heldWrites struct {
	protomux.Framed
	gate sync.Mutex
}

func (g *heldWrites) WriteMessage(b []byte) error {
	g.gate.Lock()
	g.gate.Unlock()
	return g.Framed.WriteMessage(b)
}

// TestEndWaitsForFullWriteQueue: a stream's end, sent while the client's
// write queue is over its bound behind a slow relay, reaches the relay
// after the data instead of being dropped (the peer would wait for EOF for
// good).
func TestEndWaitsForFullWriteQueue(t *testing.T) {
	g := &heldWrites{}
	c, relay := pipeClient(t, func(f protomux.Framed) protomux.Framed { g.Framed = f; return g }, ClientOptions{KeyPair: newKey(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialed := make(chan net.Conn, 1)
	go func() {
		conn, err := c.Dial(ctx, newKey(t).Public, nil)
		if err != nil {
			t.Error(err)
		}
		dialed <- conn
	}()
	conn := relay.expect(t, TypeConnect, 5*time.Second).(Connect)
	relay.send(t, Open{Custodial: true, Alias: 100, RemoteAlias: conn.Alias})
	st := <-dialed
	if st == nil {
		t.FailNow()
	}
	// 256 chunks take the queue over its 64 MiB bound with the last one
	// (each frame is a few bytes over its chunk), all of them queued
	// while the relay reads nothing.
	g.gate.Lock()
	size := 64 << 20
	if _, err := st.Write(make([]byte, size)); err != nil {
		g.gate.Unlock()
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- st.(Conn).CloseWrite() }()
	select {
	case err := <-ended:
		g.gate.Unlock()
		t.Fatalf("end sent over a full queue at once: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	g.gate.Unlock()
	if err := <-ended; err != nil {
		t.Fatalf("end: %v", err)
	}
	got := 0
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m := <-relay.msgs:
			switch v := m.(type) {
			case Data:
				for _, ch := range v.Chunks {
					got += len(ch)
				}
			case End:
				if got != size {
					t.Fatalf("end after %d bytes of %d", got, size)
				}
				return
			}
		case <-timeout:
			t.Fatalf("no end after %d bytes of %d", got, size)
		}
	}
}
