package dhtrelay

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/protomux"
)

// recordingFramed keeps a copy of every frame a relay receives from and
// sends to its client, after the transport's own encryption is removed:
// exactly what the relay learns.
type recordingFramed struct {
	protomux.Framed
	mu       sync.Mutex
	in, out  [][]byte
	inBytes  int
	outBytes int
}

func (r *recordingFramed) ReadMessage() ([]byte, error) {
	b, err := r.Framed.ReadMessage()
	if len(b) > 0 {
		r.mu.Lock()
		r.in = append(r.in, bytes.Clone(b))
		r.inBytes += len(b)
		r.mu.Unlock()
	}
	return b, err
}

func (r *recordingFramed) WriteMessage(b []byte) error {
	r.mu.Lock()
	r.out = append(r.out, bytes.Clone(b))
	r.outBytes += len(b)
	r.mu.Unlock()
	return r.Framed.WriteMessage(b)
}

// count returns how many received and sent frames contain needle.
func (r *recordingFramed) count(needle []byte) (in, out int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.in {
		if bytes.Contains(f, needle) {
			in++
		}
	}
	for _, f := range r.out {
		if bytes.Contains(f, needle) {
			out++
		}
	}
	return in, out
}

// totals returns the frame and byte counts so far; the relay may still be
// writing (pings).
func (r *recordingFramed) totals() (in, inBytes, out, outBytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.in), r.inBytes, len(r.out), r.outBytes
}

// recordingRelay serves the TCP transport and records every client's
// frames.
func recordingRelay(t *testing.T, node *dht.Node) (*Server, string, func() *recordingFramed) {
	t.Helper()
	s := NewServer(node, ServerOptions{Logger: testLogger()})
	t.Cleanup(func() { s.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var last *recordingFramed
	go func() {
		for {
			raw, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				f, _, err := TCP(context.Background(), raw, false, TCPOptions{})
				if err != nil {
					raw.Close()
					return
				}
				rec := &recordingFramed{Framed: f}
				mu.Lock()
				last = rec
				mu.Unlock()
				_ = s.ServeFramed(context.Background(), rec, raw.RemoteAddr().String())
			}()
		}
	}()
	return s, "tcp://" + l.Addr().String(), func() *recordingFramed {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// markedRoundTrip sends size bytes made of marker repeated and checks the
// echo.
func markedRoundTrip(t *testing.T, c net.Conn, marker []byte, size int) {
	t.Helper()
	roundTripData(t, c, bytes.Repeat(marker, size/len(marker)))
}

// heldSecrets walks what the relay keeps for its clients (the session,
// aliases, handshakes, key pairs; not the dht node, whose state other
// goroutines own) and counts the places holding any of secrets.
func heldSecrets(s *Server, secrets [][]byte) int {
	s.mu.Lock()
	clients := make([]*serverClient, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	found := 0
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return
			}
			seen[v.Pointer()] = true
			// Only the relay's own bookkeeping: objects of other packages
			// (the dht, udx streams, the mux) and the per-stream queues
			// run under their own locks.
			if pkg := v.Type().Elem().PkgPath(); pkg != reflect.TypeOf(Server{}).PkgPath() && pkg != "" {
				return
			}
			if v.Type() == reflect.TypeOf(&chunkQueue{}) || v.Type() == reflect.TypeOf(&Channel{}) || v.Type() == reflect.TypeOf(&Server{}) {
				return
			}
			walk(v.Elem())
		case reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			if v.Type().PkgPath() == "sync" || v.Type().PkgPath() == "sync/atomic" || v.Type().PkgPath() == "context" {
				return
			}
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		case reflect.Map:
			it := v.MapRange()
			for it.Next() {
				walk(it.Key())
				walk(it.Value())
			}
		case reflect.Slice, reflect.Array:
			if v.Type().Elem().Kind() == reflect.Uint8 {
				var b []byte
				if v.Kind() == reflect.Slice {
					b = v.Bytes()
				} else {
					b = make([]byte, v.Len())
					for i := range b {
						b[i] = byte(v.Index(i).Uint())
					}
				}
				for _, sec := range secrets {
					if bytes.Contains(b, sec) {
						found++
					}
				}
				return
			}
			for i := range v.Len() {
				walk(v.Index(i))
			}
		}
	}
	for _, c := range clients {
		c.mu.Lock()
		walk(reflect.ValueOf(c))
		c.mu.Unlock()
	}
	return found
}

// TestNonCustodialRelayNeverSeesSecrets: a non-custodial Go client dials,
// listens and announces through a Go relay; no frame the relay receives
// holds a seed of the client's key pairs, nothing the relay keeps does,
// and the data messages both ways carry only ciphertext. The same run in
// custodial mode finds the seeds and the plaintext, so the checks are not
// blind.
func TestNonCustodialRelayNeverSeesSecrets(t *testing.T) {
	tn := testnet(t, 3)
	relayNode := peerNode(t, tn)
	serverNode := peerNode(t, tn)
	const size = 1 << 20
	for _, custodial := range []bool{true, false} {
		name := map[bool]string{true: "custodial", false: "noncustodial"}[custodial]
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t, 90*time.Second)
			s, url, rec := recordingRelay(t, relayNode)
			ckp, lkp, akp := newKey(t), newKey(t), newKey(t)
			c := dialClient(t, url, ClientOptions{KeyPair: ckp, NonCustodial: !custodial})
			marker := make([]byte, 32)
			rand.Read(marker)

			// Dial a UDP server (as ckp).
			conn, err := c.Dial(ctx, echoListener(t, ctx, serverNode), nil)
			if err != nil {
				t.Fatal(err)
			}
			markedRoundTrip(t, conn, marker, size)
			conn.Close()

			// Listen (as lkp); a UDP client dials in.
			rl, err := c.Listen(ctx, lkp, nil)
			if err != nil {
				t.Fatal(err)
			}
			echoConns(rl.Accept)
			uc, err := serverNode.Dial(ctx, lkp.Public, nil)
			if err != nil {
				t.Fatal(err)
			}
			markedRoundTrip(t, uc, marker, size)
			uc.Close()

			// Announce (as akp).
			topic := dht.Hash([]byte("secrecy " + name))
			if err := c.Announce(ctx, topic, akp); err != nil {
				t.Fatal(err)
			}
			if !lookupHas(t, ctx, c, topic, akp.Public) {
				t.Fatal("announce not found")
			}

			seeds := [][]byte{}
			for _, kp := range []key.KeyPair{ckp, lkp, akp} {
				sd := kp.Seed()
				seeds = append(seeds, bytes.Clone(sd[:]))
			}
			held := heldSecrets(s, seeds)
			r := rec()
			var seedFrames int
			for _, sd := range seeds {
				in, out := r.count(sd)
				seedFrames += in + out
			}
			plainIn, plainOut := r.count(marker)
			nIn, inBytes, nOut, outBytes := r.totals()
			t.Logf("relay received %d frames (%d bytes), sent %d (%d bytes); frames with a seed %d, places holding one %d; frames with plaintext: %d in, %d out",
				nIn, inBytes, nOut, outBytes, seedFrames, held, plainIn, plainOut)
			if inBytes < 2*size || outBytes < 2*size {
				t.Fatal("the data did not go through the recorded transport")
			}
			rl.Close()
			if custodial {
				if seedFrames == 0 || held == 0 || plainIn == 0 || plainOut == 0 {
					t.Fatal("custodial: the checks did not see the keys or the plaintext (they are blind)")
				}
				return
			}
			if seedFrames != 0 || held != 0 {
				t.Fatalf("non-custodial: the relay received a seed in %d frames and holds one in %d places", seedFrames, held)
			}
			if plainIn != 0 || plainOut != 0 {
				t.Fatalf("non-custodial: plaintext in %d received and %d sent frames", plainIn, plainOut)
			}
		})
	}
}

// TestServerNonCustodialMisbehaving: a non-custodial client that answers
// a handshake step with nothing, never answers, signs garbage or sends
// answers nobody asked for costs the relay one failed dial or announce
// each, within ServerOptions.RequestTimeout, and leaves no request behind.
func TestServerNonCustodialMisbehaving(t *testing.T) {
	tn := testnet(t, 3)
	relayNode := peerNode(t, tn)
	ctx := testCtx(t, 60*time.Second)
	spk := echoListener(t, ctx, peerNode(t, tn))
	s := NewServer(relayNode, ServerOptions{Logger: testLogger(), RequestTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { s.Close() })
	f, _ := serveRaw(t, s)
	mc := newMsgClient(t, f)
	kp := newKey(t)
	mc.send(t, Handshake{PublicKey: kp.Public})
	mc.send(t, NoiseReply{ID: 4242, Payload: []byte("unasked")})
	mc.send(t, Signature{ID: 4242, Signature: make([]byte, 64)})

	// An empty answer to noiseSend: the dial fails at once.
	mc.send(t, Connect{Alias: 1, PublicKey: kp.Public, RemotePublicKey: spk})
	ns := mc.expect(t, TypeNoiseSend, 10*time.Second).(NoiseSend)
	if !ns.IsInitiator || ns.RemoteStreamAlias != 1 || len(ns.Payload) == 0 {
		t.Fatalf("noiseSend %+v", ns)
	}
	mc.send(t, NoiseReply{IsInitiator: true, ID: ns.ID})
	if d := mc.expect(t, TypeDestroy, 10*time.Second).(Destroy); d.Paired || d.RemoteAlias != 1 {
		t.Fatalf("destroy %+v", d)
	}

	// No answer: the dial fails after RequestTimeout.
	start := time.Now()
	mc.send(t, Connect{Alias: 2, PublicKey: kp.Public, RemotePublicKey: spk})
	mc.expect(t, TypeNoiseSend, 10*time.Second)
	d := mc.expect(t, TypeDestroy, 10*time.Second).(Destroy)
	if d.RemoteAlias != 2 || !strings.Contains(d.Error, "did not answer") {
		t.Fatalf("destroy %+v", d)
	}
	t.Logf("unanswered handshake destroyed after %v", time.Since(start))

	// Garbage signatures: the announce finishes and stores nothing.
	topic := dht.Hash([]byte("misbehaving"))
	mc.send(t, Announce{ID: 3, Topic: topic, PublicKey: kp.Public})
	asked := 0
	for finished := false; !finished; {
		select {
		case m := <-mc.msgs:
			switch m := m.(type) {
			case SignAnnounce:
				asked++
				mc.send(t, Signature{ID: m.ID, Signature: make([]byte, 64)})
			case Finished:
				finished = m.ID == 3
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the announce did not finish")
		}
	}
	if asked == 0 {
		t.Fatal("the relay never asked for a signature")
	}
	q := relayNode.Lookup(ctx, topic)
	for r := range q.All(ctx) {
		for _, p := range r.Peers {
			if p.PublicKey == kp.Public {
				t.Fatal("an announce with a garbage signature was stored")
			}
		}
	}
	q.Close()

	// The session still works and holds no outstanding request.
	mc.send(t, Ping{})
	mc.expect(t, TypePong, 5*time.Second)
	s.mu.Lock()
	for c := range s.clients {
		c.mu.Lock()
		pending, noise, sigs := c.sess.Pending(), len(c.noise), len(c.signatures)
		c.mu.Unlock()
		if pending != 0 || noise != 0 || sigs != 0 {
			t.Errorf("left behind: %d session requests, %d handshakes, %d signature waits", pending, noise, sigs)
		}
	}
	s.mu.Unlock()
}
