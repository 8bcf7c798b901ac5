package dhtrelay

import (
	"errors"
	"testing"
)

// pair drives a client and a relay Session in lockstep, as if connected.
type pair struct {
	t    *testing.T
	c, r *Session
}

func newPair(t *testing.T) *pair {
	p := &pair{t: t, c: NewSession(RoleClient, Limits{}), r: NewSession(RoleRelay, Limits{})}
	p.client(Handshake{PublicKey: samplePK})
	return p
}

// client sends m from the client to the relay and returns the relay's
// action.
func (p *pair) client(m Message) Action {
	p.t.Helper()
	if _, err := p.c.Send(m); err != nil {
		p.t.Fatalf("client send %s: %v", m.Type(), err)
	}
	a, err := p.r.Receive(m)
	if err != nil {
		p.t.Fatalf("relay receive %s: %v", m.Type(), err)
	}
	return a
}

// relay sends m from the relay to the client and returns the client's
// action.
func (p *pair) relay(m Message) Action {
	p.t.Helper()
	if _, err := p.r.Send(m); err != nil {
		p.t.Fatalf("relay send %s: %v", m.Type(), err)
	}
	a, err := p.c.Receive(m)
	if err != nil {
		p.t.Fatalf("client receive %s: %v", m.Type(), err)
	}
	return a
}

func (p *pair) empty() {
	p.t.Helper()
	for _, s := range []*Session{p.c, p.r} {
		if s.Streams()+s.Servers()+s.Queries()+s.Pending() != 0 {
			p.t.Fatalf("%s still tracks %d streams, %d servers, %d queries, %d requests",
				s.Role(), s.Streams(), s.Servers(), s.Queries(), s.Pending())
		}
	}
}

// The outgoing connection of §5.3, non-custodial.
func TestSessionConnect(t *testing.T) {
	p := newPair(t)
	A := p.c.NextID()
	ra := p.client(Connect{Alias: A, PublicKey: samplePK, RemotePublicKey: sampleRPK})
	R := ra.New
	if R == 0 || ra.Stream != R {
		t.Fatalf("relay action %+v", ra)
	}
	H := p.r.NextID()
	if a := p.relay(NoiseSend{IsInitiator: true, ID: H, RemoteStreamAlias: A, Payload: []byte("np")}); a.Stream != A || !a.Initiator || a.Request != H {
		t.Fatalf("client noiseSend action %+v", a)
	}
	if a := p.client(NoiseReply{IsInitiator: true, ID: H, Payload: []byte("msg1")}); a.Stream != R {
		t.Fatalf("relay noiseReply action %+v", a)
	}
	p.relay(NoiseReceive{IsInitiator: true, ID: H, Payload: []byte("msg2")})
	p.client(NoiseReply{IsInitiator: true, Complete: true, ID: H, Payload: []byte("np")})
	// The Node relay reads msg2 twice when two nodes answer the
	// PEER_HANDSHAKE; a second reply would crash it. The client's session
	// refuses the request (the client answers nothing), and the open
	// still ends the handshake.
	if _, err := p.c.Receive(NoiseReceive{IsInitiator: true, ID: H, Payload: []byte("msg2")}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("noiseReceive on a complete handshake: %v, want ErrProtocol", err)
	}
	if _, err := p.c.Send(NoiseReply{IsInitiator: true, ID: H, Payload: []byte("np")}); err == nil {
		t.Fatal("the client session let a second reply go out")
	}
	if a := p.relay(Open{Alias: R, RemoteAlias: A, HandshakeID: H}); a.Stream != A {
		t.Fatalf("client open action %+v", a)
	}
	if a := p.client(Data{Alias: A, Chunks: [][]byte{[]byte("x")}}); a.Stream != R {
		t.Fatalf("relay data action %+v", a)
	}
	if a := p.relay(Data{Alias: R}); a.Stream != A {
		t.Fatalf("client data action %+v", a)
	}
	p.relay(End{Alias: R})
	p.client(End{Alias: A})
	if a := p.client(Destroy{Paired: true, Alias: A}); !a.Gone || a.Stream != R {
		t.Fatalf("relay destroy action %+v", a)
	}
	p.empty()

	// A connect that fails before open: the relay's unpaired destroy
	// names the client's alias.
	A2 := p.c.NextID()
	p.client(Connect{Custodial: true, Alias: A2, PublicKey: samplePK, SecretKey: sampleSK, RemotePublicKey: sampleRPK})
	if a := p.relay(Destroy{RemoteAlias: A2, Error: "PEER_NOT_FOUND"}); !a.Gone || a.Stream != A2 {
		t.Fatalf("client destroy action %+v", a)
	}
	p.empty()
}

// A server with announce signing, a non-custodial inbound connection and
// a custodial firewall question (§5.4).
func TestSessionServer(t *testing.T) {
	p := newPair(t)
	S := p.c.NextID()
	S2 := p.client(Listen{Alias: S, PublicKey: samplePK}).New
	sig := p.r.NextID()
	if a := p.relay(SignAnnounce{ID: sig, Signee: S, Token: sampleToken}); a.Request != sig || a.Query != S {
		t.Fatalf("client signAnnounce action %+v", a)
	}
	p.client(Signature{ID: sig, Signature: rep(64, 1)})
	if a := p.relay(Listening{Alias: S2, RemoteAlias: S, Address: ap("1.2.3.4:5")}); a.Server != S {
		t.Fatalf("client listening action %+v", a)
	}

	H := p.r.NextID()
	if a := p.relay(NoiseReceive{ID: H, ServerAlias: S2, Payload: []byte("msg1")}); a.Server != S || a.Initiator {
		t.Fatalf("client noiseReceive action %+v", a)
	}
	p.client(NoiseReply{ID: H, Payload: []byte("np"), RemotePublicKey: sampleRPK})
	p.relay(NoiseSend{ID: H, Payload: []byte("np")})
	p.client(NoiseReply{Complete: true, ID: H, Payload: []byte("msg2")})
	C := p.r.NextID()
	ca := p.relay(Connection{Alias: C, ServerAlias: S2, RemotePublicKey: sampleRPK, HandshakeID: H})
	C2 := ca.New
	if C2 == 0 || ca.Server != S {
		t.Fatalf("client connection action %+v", ca)
	}
	// Data may arrive before the client's connected.
	if a := p.relay(Data{Alias: C}); a.Stream != C2 {
		t.Fatalf("client data action %+v", a)
	}
	if a := p.client(Connected{Alias: C2, RemoteAlias: C}); a.Stream != C {
		t.Fatalf("relay connected action %+v", a)
	}
	if a := p.client(Data{Alias: C2}); a.Stream != C {
		t.Fatalf("relay data action %+v", a)
	}

	// A denied inbound handshake is forgotten.
	H2 := p.r.NextID()
	p.relay(NoiseReceive{ID: H2, ServerAlias: S2, Payload: []byte("msg1")})
	if a := p.client(NoiseReply{ID: H2, RemotePublicKey: sampleRPK}); !a.Gone {
		t.Fatalf("deny action %+v", a)
	}

	// Custodial firewall question.
	I := p.r.NextID()
	if a := p.relay(Incoming{ID: I, ServerAlias: S2, RemotePublicKey: sampleRPK}); a.Server != S || a.Request != I {
		t.Fatalf("client incoming action %+v", a)
	}
	p.client(Deny{ID: I})

	p.relay(Destroy{Paired: true, Alias: C})
	p.client(Close{Alias: S})
	if a := p.relay(Closed{Alias: S2}); !a.Gone || a.Server != S {
		t.Fatalf("client closed action %+v", a)
	}
	p.empty()
}

func TestSessionQueries(t *testing.T) {
	p := newPair(t)
	Q := p.c.NextID()
	p.client(Lookup{ID: Q, Topic: sampleTopic})
	p.relay(Result{ID: Q, Data: Announcers{}.Append(nil)})
	if a := p.relay(Finished{ID: Q}); !a.Gone || a.Query != Q {
		t.Fatalf("finished action %+v", a)
	}
	Q2 := p.c.NextID()
	p.client(Announce{ID: Q2, Topic: sampleTopic, PublicKey: samplePK})
	sig := p.r.NextID()
	p.relay(SignAnnounce{ID: sig, Signee: Q2, Token: sampleToken})
	p.client(Signature{ID: sig, Signature: rep(64, 2)})
	sig2 := p.r.NextID()
	p.relay(SignUnannounce{ID: sig2, Signee: Q2, Token: sampleToken})
	// The query finishes before the client signs: the request goes.
	p.relay(Finished{ID: Q2})
	p.empty()
	if _, err := p.r.Receive(Signature{ID: sig2}); !errors.Is(err, ErrUnknownAlias) {
		t.Fatalf("late signature: %v", err)
	}
	// A lookup is no signee.
	Q3 := p.c.NextID()
	p.client(Lookup{ID: Q3, Topic: sampleTopic})
	if _, err := p.c.Receive(SignAnnounce{ID: 99, Signee: Q3}); !errors.Is(err, ErrUnknownAlias) {
		t.Fatalf("sign for a lookup: %v", err)
	}
}

// Messages that do not fit the state are refused and change nothing.
func TestSessionRefusals(t *testing.T) {
	c := NewSession(RoleClient, Limits{})
	r := NewSession(RoleRelay, Limits{})
	if _, err := r.Receive(Connect{Alias: 1}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("connect before handshake: %v", err)
	}
	if a, err := c.Receive(Ping{}); err != nil || a.Reply != (Pong{}) {
		t.Fatalf("ping before handshake: %+v %v", a, err)
	}
	p := newPair(t)
	c, r = p.c, p.r
	cases := []struct {
		s    *Session
		recv bool
		m    Message
		want error
	}{
		{r, true, Handshake{}, ErrProtocol},
		{c, false, Handshake{}, ErrProtocol},
		{r, true, Open{Alias: 1}, ErrProtocol},    // a client does not send open
		{r, false, Listen{Alias: 1}, ErrProtocol}, // a relay does not send listen
		{c, true, Open{Alias: 5, RemoteAlias: 9}, ErrUnknownAlias},
		{c, true, Data{Alias: 5}, ErrUnknownAlias},
		{r, true, Data{Alias: 5}, ErrUnknownAlias},
		{r, true, Destroy{Paired: true, Alias: 5}, ErrUnknownAlias},
		{r, true, Accept{ID: 5}, ErrUnknownAlias},
		{r, true, Signature{ID: 5}, ErrUnknownAlias},
		{r, true, NoiseReply{ID: 5}, ErrUnknownAlias},
		{c, true, NoiseSend{ID: 5}, ErrUnknownAlias},
		{c, true, NoiseReceive{ID: 5, ServerAlias: 3}, ErrUnknownAlias},
		{c, true, Connection{Alias: 5, ServerAlias: 3}, ErrUnknownAlias},
		{c, true, Listening{Alias: 5, RemoteAlias: 3}, ErrUnknownAlias},
		{c, true, Closed{Alias: 5}, ErrUnknownAlias},
		{c, true, Result{ID: 5}, ErrUnknownAlias},
		{r, true, Close{Alias: 5}, ErrUnknownAlias},
		{r, true, Connected{Alias: 5, RemoteAlias: 6}, ErrUnknownAlias},
	}
	for i, tc := range cases {
		var err error
		if tc.recv {
			_, err = tc.s.Receive(tc.m)
		} else {
			_, err = tc.s.Send(tc.m)
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("case %d %s: %v, want %v", i, tc.m.Type(), err, tc.want)
		}
	}
	p.empty()

	// Aliases cannot be used twice.
	A := c.NextID()
	p.client(Connect{Alias: A})
	if _, err := c.Send(Connect{Alias: A}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("reused alias: %v", err)
	}
	if _, err := r.Receive(Connect{Alias: A}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("reused remote alias: %v", err)
	}
	// A noise request waits for its reply before the next.
	H := r.NextID()
	p.relay(NoiseSend{IsInitiator: true, ID: H, RemoteStreamAlias: A})
	if _, err := r.Send(NoiseReceive{IsInitiator: true, ID: H}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("second request: %v", err)
	}
	// Open must name the completed handshake.
	if _, err := r.Send(Open{Alias: 1, RemoteAlias: A, HandshakeID: H}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("open before handshake completes: %v", err)
	}
}

func TestSessionLimits(t *testing.T) {
	r := NewSession(RoleRelay, Limits{Streams: 2, Queries: 1})
	if _, err := r.Receive(Handshake{}); err != nil {
		t.Fatal(err)
	}
	for i := range uint32(2) {
		if _, err := r.Receive(Connect{Alias: i + 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Receive(Connect{Alias: 3}); !errors.Is(err, ErrLimit) {
		t.Fatalf("third stream: %v", err)
	}
	if _, err := r.Receive(Lookup{ID: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Receive(Lookup{ID: 11}); !errors.Is(err, ErrLimit) {
		t.Fatalf("second query: %v", err)
	}
}

func TestNextIDWraps(t *testing.T) {
	s := NewSession(RoleClient, Limits{})
	s.Send(Handshake{})
	s.next = 0xfffffffe
	if id := s.NextID(); id != 0xffffffff {
		t.Fatalf("got %d", id)
	}
	s.Send(Connect{Alias: 1})
	if id := s.NextID(); id != 2 { // wraps past 0 and past the live alias 1
		t.Fatalf("after wrap got %d", id)
	}
}

// FuzzSession feeds arbitrary messages to both roles: no panic, the
// limits hold, and a refused message leaves the counts unchanged.
func FuzzSession(f *testing.F) {
	var seed []byte
	for _, m := range []Message{Handshake{}, Connect{Alias: 1}, Listen{Alias: 2}, Lookup{ID: 3},
		Open{Alias: 7, RemoteAlias: 1, Custodial: true}, Listening{Alias: 8, RemoteAlias: 2},
		NoiseReceive{ID: 9, ServerAlias: 8}, Connection{Alias: 4, ServerAlias: 8, Custodial: true}, Data{Alias: 7}, Finished{ID: 3}} {
		body := m.AppendBody(nil)
		seed = append(seed, byte(m.Type()), byte(len(body)))
		seed = append(seed, body...)
	}
	f.Add(seed, false)
	f.Add(seed, true)
	f.Fuzz(func(t *testing.T, in []byte, relay bool) {
		role := RoleClient
		if relay {
			role = RoleRelay
		}
		s := NewSession(role, Limits{Streams: 8, Servers: 4, Queries: 4, Requests: 8})
		for len(in) >= 2 {
			typ, n := Type(in[0]%NumTypes), int(in[1])
			in = in[2:]
			n = min(n, len(in))
			m, err := DecodeMessage(typ, in[:n])
			in = in[n:]
			if err != nil {
				continue
			}
			before := [4]int{s.Streams(), s.Servers(), s.Queries(), s.Pending()}
			if _, err := s.Receive(m); err != nil {
				if after := [4]int{s.Streams(), s.Servers(), s.Queries(), s.Pending()}; after != before {
					t.Fatalf("refused %s changed the state: %v → %v", typ, before, after)
				}
				if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrLimit) {
					t.Fatalf("unclassified error %v", err)
				}
			}
			if s.Streams() > 8 || s.Servers() > 4 || s.Queries() > 4 || s.Pending() > 8 {
				t.Fatalf("limits exceeded")
			}
		}
	})
}
