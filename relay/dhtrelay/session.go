package dhtrelay

import (
	"fmt"
)

// Role is the side a Session plays.
type Role uint8

const (
	// RoleClient is the relayed side (lib/node.js): it has no DHT of its
	// own and asks the relay for everything.
	RoleClient Role = iota
	// RoleRelay is the side with a DHT node (lib/node-proxy.js).
	RoleRelay
)

func (r Role) String() string {
	if r == RoleRelay {
		return "relay"
	}
	return "client"
}

// Limits bound what a peer can make a Session track. Zero fields mean the
// defaults (DefaultLimits).
type Limits struct {
	Streams  int // streams, connecting or open
	Servers  int
	Queries  int
	Requests int // outstanding handshakes, firewall questions and signature requests
}

// DefaultLimits are generous for one client and small enough that a
// hostile peer cannot grow a relay's memory without bound.
var DefaultLimits = Limits{Streams: 4096, Servers: 256, Queries: 1024, Requests: 4096}

// Action is what a received message means for this side, with every alias
// and id resolved to this side's own objects. Fields that do not apply are
// zero.
type Action struct {
	Msg Message
	// Reply is a message the protocol answers by itself (pong to ping);
	// the caller sends it (through Send, like any other).
	Reply Message
	// Stream is this side's alias of the stream the message concerns.
	Stream uint32
	// Server is this side's alias of the server concerned (for a new
	// inbound connection: the server it arrived on).
	Server uint32
	// Query is the query id (the client's numbering, on both sides).
	Query uint32
	// Request is the relay's id of a handshake, firewall question or
	// signature request.
	Request uint32
	// New is an alias this side has just allocated for an object the
	// peer created: the relay's stream alias for a connect, its server
	// alias for a listen, the client's stream alias for a connection.
	// The caller uses it in its answer (open, listening, connected).
	New uint32
	// Initiator tells, for noise messages, whether the handshake is for
	// an outgoing connection.
	Initiator bool
	// Gone is set when the object the message concerns no longer exists
	// after it (a stream destroyed, a server closed, a query finished).
	Gone bool
}

type stream struct {
	local, remote uint32
	hasRemote     bool   // the peer's alias is known
	inbound       bool   // arrived on a server (connection), else from connect
	confirmed     bool   // client: connected was sent for an inbound stream
	server        uint32 // local alias of the server for inbound streams
}

type server struct {
	local, remote uint32
	hasRemote     bool
	closing       bool
}

type query struct {
	id     uint32
	signee bool // announce and unannounce queries sign records
}

type handshake struct {
	id        uint32
	initiator bool
	stream    uint32 // local alias of the stream (initiator)
	server    uint32 // local alias of the server (responder)
	awaiting  bool   // a noiseSend/noiseReceive waits for its noiseReply
	complete  bool   // a noiseReply said so: no further request is valid
}

// Session is the bookkeeping both sides of a relay channel keep: which
// alias of the peer refers to which of this side's streams, servers,
// queries and outstanding requests. It does no I/O and keeps no clock:
// feed it every message received (Receive) and every message about to be
// sent (Send); it checks the message against the state, updates the state
// and says what the message refers to.
//
// A message that does not fit (an unknown alias, a reply to nothing, an
// alias used twice, anything but ping/pong before the handshake) returns
// an error wrapping ErrProtocol and leaves the state unchanged. The
// reference ignores such messages silently; a caller may do the same, or
// close the session.
//
// Aliases: every message carries the sender's own alias of an object,
// except where a field is named remote… (then it is the receiver's). Ids of
// queries are the client's; ids of handshakes, firewall questions and
// signature requests are the relay's.
//
// Session is not safe for concurrent use.
type Session struct {
	role       Role
	limits     Limits
	handshaken bool
	next       uint32

	streams     map[uint32]*stream // by local alias
	streamByRem map[uint32]uint32  // remote alias → local alias
	servers     map[uint32]*server
	serverByRem map[uint32]uint32
	queries     map[uint32]*query // by the client's id
	handshakes  map[uint32]*handshake
	firewall    map[uint32]uint32 // question id → local server alias
	signatures  map[uint32]uint32 // request id → signee (query id or the client's server alias)
}

// NewSession returns the state of a fresh channel for role.
func NewSession(role Role, limits Limits) *Session {
	if limits.Streams <= 0 {
		limits.Streams = DefaultLimits.Streams
	}
	if limits.Servers <= 0 {
		limits.Servers = DefaultLimits.Servers
	}
	if limits.Queries <= 0 {
		limits.Queries = DefaultLimits.Queries
	}
	if limits.Requests <= 0 {
		limits.Requests = DefaultLimits.Requests
	}
	return &Session{
		role:        role,
		limits:      limits,
		streams:     map[uint32]*stream{},
		streamByRem: map[uint32]uint32{},
		servers:     map[uint32]*server{},
		serverByRem: map[uint32]uint32{},
		queries:     map[uint32]*query{},
		handshakes:  map[uint32]*handshake{},
		firewall:    map[uint32]uint32{},
		signatures:  map[uint32]uint32{},
	}
}

// Role returns the session's side.
func (s *Session) Role() Role { return s.role }

// NextID allocates an alias or id the way the reference does (a counter
// from 1 that wraps back to 1 after 2^32−1), skipping any still in use by
// this side, so that a wrapped counter never aliases a live object.
func (s *Session) NextID() uint32 {
	for {
		s.next++
		if s.next == 0 {
			s.next = 1
		}
		if !s.inUse(s.next) {
			return s.next
		}
	}
}

func (s *Session) inUse(id uint32) bool {
	if _, ok := s.streams[id]; ok {
		return true
	}
	if _, ok := s.servers[id]; ok {
		return true
	}
	if s.role == RoleClient {
		_, ok := s.queries[id]
		return ok
	}
	_, h := s.handshakes[id]
	_, f := s.firewall[id]
	_, g := s.signatures[id]
	return h || f || g
}

func protoErr(dir string, m Message, format string, a ...any) error {
	return fmt.Errorf("%w: %s %s: "+format, append([]any{ErrProtocol, dir, m.Type()}, a...)...)
}

func unknown(dir string, m Message, what string, id uint32) error {
	return fmt.Errorf("%w: %w: %s %s: %s %d", ErrProtocol, ErrUnknownAlias, dir, m.Type(), what, id)
}

func (s *Session) pending() int { return len(s.handshakes) + len(s.firewall) + len(s.signatures) }

func (s *Session) limit(what string, n, max int) error {
	if n >= max {
		return fmt.Errorf("%w: %d %s", ErrLimit, max, what)
	}
	return nil
}

// Streams returns how many streams the session tracks (for tests and
// metrics).
func (s *Session) Streams() int { return len(s.streams) }

// Servers returns how many servers the session tracks.
func (s *Session) Servers() int { return len(s.servers) }

// Queries returns how many queries the session tracks.
func (s *Session) Queries() int { return len(s.queries) }

// Pending returns how many handshakes, firewall questions and signature
// requests are outstanding.
func (s *Session) Pending() int { return s.pending() }

// sentBy reports whether messages of type t are ones that role sends.
func sentBy(role Role, t Type) bool {
	switch t {
	case TypePing, TypePong, TypeDestroy, TypeEnd, TypeData:
		return true // both directions (ping: only the relay sends it in the reference, but answering one is harmless)
	case TypeHandshake, TypeConnect, TypeConnected, TypeDeny, TypeAccept, TypeListen, TypeClose,
		TypeLookup, TypeAnnounce, TypeUnannounce, TypeSignature, TypeNoiseReply:
		return role == RoleClient
	default:
		return role == RoleRelay
	}
}

func (s *Session) removeStream(st *stream) {
	delete(s.streams, st.local)
	if st.hasRemote {
		delete(s.streamByRem, st.remote)
	}
	for id, h := range s.handshakes {
		if h.initiator && h.stream == st.local {
			delete(s.handshakes, id)
		}
	}
}

func (s *Session) removeServer(sv *server) {
	delete(s.servers, sv.local)
	if sv.hasRemote {
		delete(s.serverByRem, sv.remote)
	}
	for id, h := range s.handshakes {
		if !h.initiator && h.server == sv.local {
			delete(s.handshakes, id)
		}
	}
	for id, srv := range s.firewall {
		if srv == sv.local {
			delete(s.firewall, id)
		}
	}
	signee := s.clientServerAlias(sv)
	for id, sg := range s.signatures {
		if sg == signee {
			if q, ok := s.queries[sg]; !ok || !q.signee {
				delete(s.signatures, id)
			}
		}
	}
	// Inbound streams stay: closing a hyperdht server does not end its
	// established connections.
}

// byRemote finds a stream by the peer's alias.
func (s *Session) byRemote(alias uint32) *stream {
	if l, ok := s.streamByRem[alias]; ok {
		return s.streams[l]
	}
	return nil
}

func (s *Session) serverByRemote(alias uint32) *server {
	if l, ok := s.serverByRem[alias]; ok {
		return s.servers[l]
	}
	return nil
}

// streamFor finds a stream by the alias a message carries: this side's
// own in a message it sends, the peer's in one it receives.
func (s *Session) streamFor(out bool, alias uint32) *stream {
	if out {
		return s.streams[alias]
	}
	return s.byRemote(alias)
}

// serverFor is streamFor for servers.
func (s *Session) serverFor(out bool, alias uint32) *server {
	if out {
		return s.servers[alias]
	}
	return s.serverByRemote(alias)
}

// clientServerAlias is the client's alias of a server, on either side.
func (s *Session) clientServerAlias(sv *server) uint32 {
	if s.role == RoleClient {
		return sv.local
	}
	return sv.remote
}

// signeeKnown reports whether a signee (an announce query id, or the
// client's alias of a server) exists.
func (s *Session) signeeKnown(signee uint32) bool {
	if q, ok := s.queries[signee]; ok && q.signee {
		return true
	}
	var sv *server
	if s.role == RoleClient {
		sv = s.servers[signee]
	} else {
		sv = s.serverByRemote(signee)
	}
	return sv != nil
}

// Send checks m, which this side is about to send, against the state and
// records it. Objects this side creates (connect, listen, connection and
// the relay's request ids) must use an alias from NextID that is not in
// use.
func (s *Session) Send(m Message) (Action, error) { return s.apply(m, true) }

// Receive checks m, received from the peer, against the state, records it
// and resolves what it refers to.
func (s *Session) Receive(m Message) (Action, error) { return s.apply(m, false) }

// dirMsg is a message on its way through apply: which way it goes, and
// its direction's name for errors.
type dirMsg struct {
	m   Message
	out bool   // sent by this side
	dir string // "sent" or "received"
}

func (d dirMsg) protoErr(format string, a ...any) error { return protoErr(d.dir, d.m, format, a...) }
func (d dirMsg) unknown(what string, id uint32) error   { return unknown(d.dir, d.m, what, id) }

// apply checks the session-wide rules (who sends what, the handshake
// first), then hands m to the step for its kind: session_streams.go,
// session_servers.go, session_queries.go and session_noise.go. A step
// changes the state only when it returns no error.
func (s *Session) apply(m Message, out bool) (Action, error) {
	d := dirMsg{m: m, out: out, dir: "received"}
	sender := 1 - s.role
	if out {
		d.dir, sender = "sent", s.role
	}
	a := Action{Msg: m}
	t := m.Type()
	if !sentBy(sender, t) {
		return a, d.protoErr("a %s does not send this", sender)
	}
	switch t {
	case TypePing:
		if !out {
			a.Reply = Pong{}
		}
		return a, nil
	case TypePong:
		return a, nil
	case TypeHandshake:
		if s.handshaken {
			return a, d.protoErr("second handshake")
		}
		s.handshaken = true
		return a, nil
	}
	if !s.handshaken {
		return a, d.protoErr("before the handshake")
	}

	switch v := d.m.(type) {
	case Connect:
		return s.connect(d, v, a)
	case Open:
		return s.open(d, v, a)
	case Connection:
		return s.connection(d, v, a)
	case Connected:
		return s.connected(d, v, a)
	case Data, End:
		return s.streamData(d, a)
	case Destroy:
		return s.destroy(d, v, a)
	case Listen:
		return s.listen(d, v, a)
	case Listening:
		return s.listening(d, v, a)
	case Close:
		return s.closeServer(d, v, a)
	case Closed:
		return s.closed(d, v, a)
	case Incoming:
		return s.incoming(d, v, a)
	case Accept, Deny:
		return s.firewallAnswer(d, a)
	case Lookup, Announce, Unannounce:
		return s.query(d, a)
	case Result, Finished:
		return s.queryReply(d, a)
	case SignAnnounce, SignUnannounce:
		return s.signRequest(d, a)
	case Signature:
		return s.signature(d, v, a)
	case NoiseSend:
		return s.noiseSend(d, v, a)
	case NoiseReceive:
		return s.noiseReceive(d, v, a)
	case NoiseReply:
		return s.noiseReply(d, v, a)
	}
	return a, d.protoErr("not handled")
}

// aliasOf returns the single alias or id field of the short messages.
func aliasOf(m Message) uint32 {
	switch v := m.(type) {
	case Data:
		return v.Alias
	case End:
		return v.Alias
	case Accept:
		return v.ID
	case Deny:
		return v.ID
	case Lookup:
		return v.ID
	case Announce:
		return v.ID
	case Unannounce:
		return v.ID
	case Result:
		return v.ID
	case Finished:
		return v.ID
	}
	return 0
}

func pick(cond bool, a, b uint32) uint32 {
	if cond {
		return a
	}
	return b
}

// ForgetStream drops the stream with this side's alias local without a
// message: both halves ended, so the stream closed on both sides, as the
// reference's streams close after end in each direction. It reports
// whether the stream was known.
func (s *Session) ForgetStream(local uint32) bool {
	st := s.streams[local]
	if st == nil {
		return false
	}
	s.removeStream(st)
	return true
}

// ForgetRequest drops an outstanding handshake, firewall question or
// signature request with the relay's id without a message: the relay gave
// up waiting for its answer, or its DHT dropped the handshake. It reports
// whether the id was known.
func (s *Session) ForgetRequest(id uint32) bool {
	_, h := s.handshakes[id]
	_, f := s.firewall[id]
	_, g := s.signatures[id]
	delete(s.handshakes, id)
	delete(s.firewall, id)
	delete(s.signatures, id)
	return h || f || g
}
