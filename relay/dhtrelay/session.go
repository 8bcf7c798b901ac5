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

func (s *Session) apply(m Message, out bool) (Action, error) {
	dir := "received"
	sender := s.role
	if out {
		dir = "sent"
	} else {
		sender = 1 - s.role
	}
	a := Action{Msg: m}
	t := m.Type()
	if !sentBy(sender, t) {
		return a, protoErr(dir, m, "a %s does not send this", sender)
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
			return a, protoErr(dir, m, "second handshake")
		}
		s.handshaken = true
		return a, nil
	}
	if !s.handshaken {
		return a, protoErr(dir, m, "before the handshake")
	}

	switch v := m.(type) {
	// --- streams ---
	case Connect:
		// The client's alias of a new outgoing stream.
		if err := s.limit("streams", len(s.streams), s.limits.Streams); err != nil {
			return a, err
		}
		if out {
			if s.inUse(v.Alias) {
				return a, protoErr(dir, m, "alias %d in use", v.Alias)
			}
			s.streams[v.Alias] = &stream{local: v.Alias}
			a.Stream = v.Alias
			return a, nil
		}
		if s.byRemote(v.Alias) != nil {
			return a, protoErr(dir, m, "stream alias %d in use", v.Alias)
		}
		l := s.NextID()
		s.streams[l] = &stream{local: l, remote: v.Alias, hasRemote: true}
		s.streamByRem[v.Alias] = l
		a.Stream, a.New = l, l
		return a, nil

	case Open:
		// relay → client: the relay's alias R of the client's stream A.
		var st *stream
		if out {
			st = s.streams[v.Alias]
			if st == nil || st.inbound || st.remote != v.RemoteAlias {
				return a, unknown(dir, m, "stream", v.Alias)
			}
		} else {
			st = s.streams[v.RemoteAlias]
			if st == nil || st.inbound || st.hasRemote {
				return a, unknown(dir, m, "connecting stream", v.RemoteAlias)
			}
			if s.byRemote(v.Alias) != nil {
				return a, protoErr(dir, m, "stream alias %d in use", v.Alias)
			}
		}
		if st.confirmed {
			return a, protoErr(dir, m, "stream %d already open", st.local)
		}
		if err := s.consumeHandshake(dir, m, v.Custodial, v.HandshakeID, true, st.local); err != nil {
			return a, err
		}
		st.confirmed = true
		if !out {
			st.remote, st.hasRemote = v.Alias, true
			s.streamByRem[v.Alias] = st.local
		}
		a.Stream = st.local
		return a, nil

	case Connection:
		// relay → client: a new inbound stream C on the relay's server S′.
		if err := s.limit("streams", len(s.streams), s.limits.Streams); err != nil {
			return a, err
		}
		var sv *server
		if out {
			sv = s.servers[v.ServerAlias]
			if s.inUse(v.Alias) {
				return a, protoErr(dir, m, "alias %d in use", v.Alias)
			}
		} else {
			sv = s.serverByRemote(v.ServerAlias)
			if s.byRemote(v.Alias) != nil {
				return a, protoErr(dir, m, "stream alias %d in use", v.Alias)
			}
		}
		if sv == nil {
			return a, unknown(dir, m, "server", v.ServerAlias)
		}
		if err := s.consumeHandshake(dir, m, v.Custodial, v.HandshakeID, false, sv.local); err != nil {
			return a, err
		}
		if out {
			s.streams[v.Alias] = &stream{local: v.Alias, inbound: true, server: sv.local}
			a.Stream = v.Alias
		} else {
			l := s.NextID()
			s.streams[l] = &stream{local: l, remote: v.Alias, hasRemote: true, inbound: true, server: sv.local}
			s.streamByRem[v.Alias] = l
			a.Stream, a.New = l, l
		}
		a.Server = sv.local
		return a, nil

	case Connected:
		// client → relay: the client's alias C′ of the relay's stream C.
		var st *stream
		if out {
			st = s.streams[v.Alias]
			if st == nil || !st.inbound || st.remote != v.RemoteAlias {
				return a, unknown(dir, m, "inbound stream", v.Alias)
			}
		} else {
			st = s.streams[v.RemoteAlias]
			if st == nil || !st.inbound || st.hasRemote {
				return a, unknown(dir, m, "unconfirmed inbound stream", v.RemoteAlias)
			}
			if s.byRemote(v.Alias) != nil {
				return a, protoErr(dir, m, "stream alias %d in use", v.Alias)
			}
		}
		if st.confirmed {
			return a, protoErr(dir, m, "stream %d already confirmed", st.local)
		}
		st.confirmed = true
		if !out {
			st.remote, st.hasRemote = v.Alias, true
			s.streamByRem[v.Alias] = st.local
		}
		a.Stream = st.local
		return a, nil

	case Data, End:
		alias := aliasOf(m)
		var st *stream
		if out {
			st = s.streams[alias]
		} else {
			st = s.byRemote(alias)
		}
		if st == nil {
			return a, unknown(dir, m, "stream", alias)
		}
		a.Stream = st.local
		return a, nil

	case Destroy:
		// paired: the sender's alias; unpaired: the receiver's alias of
		// a stream still connecting (the reference's relay sends it when
		// connect fails before open; the client never sends it).
		var st *stream
		switch {
		case v.Paired && out, !v.Paired && !out:
			st = s.streams[pick(v.Paired, v.Alias, v.RemoteAlias)]
		default:
			st = s.byRemote(pick(v.Paired, v.Alias, v.RemoteAlias))
		}
		if st == nil {
			return a, unknown(dir, m, "stream", pick(v.Paired, v.Alias, v.RemoteAlias))
		}
		s.removeStream(st)
		a.Stream, a.Gone = st.local, true
		return a, nil

	// --- servers ---
	case Listen:
		if err := s.limit("servers", len(s.servers), s.limits.Servers); err != nil {
			return a, err
		}
		if out {
			if s.inUse(v.Alias) {
				return a, protoErr(dir, m, "alias %d in use", v.Alias)
			}
			s.servers[v.Alias] = &server{local: v.Alias}
			a.Server = v.Alias
			return a, nil
		}
		if s.serverByRemote(v.Alias) != nil {
			return a, protoErr(dir, m, "server alias %d in use", v.Alias)
		}
		l := s.NextID()
		s.servers[l] = &server{local: l, remote: v.Alias, hasRemote: true}
		s.serverByRem[v.Alias] = l
		a.Server, a.New = l, l
		return a, nil

	case Listening:
		var sv *server
		if out {
			sv = s.servers[v.Alias]
			if sv == nil || sv.remote != v.RemoteAlias {
				return a, unknown(dir, m, "server", v.Alias)
			}
		} else {
			sv = s.servers[v.RemoteAlias]
			if sv == nil || sv.hasRemote {
				return a, unknown(dir, m, "opening server", v.RemoteAlias)
			}
			if s.serverByRemote(v.Alias) != nil {
				return a, protoErr(dir, m, "server alias %d in use", v.Alias)
			}
			sv.remote, sv.hasRemote = v.Alias, true
			s.serverByRem[v.Alias] = sv.local
		}
		a.Server = sv.local
		return a, nil

	case Close:
		// client → relay, the client's alias.
		var sv *server
		if out {
			sv = s.servers[v.Alias]
		} else {
			sv = s.serverByRemote(v.Alias)
		}
		if sv == nil {
			return a, unknown(dir, m, "server", v.Alias)
		}
		sv.closing = true
		a.Server = sv.local
		return a, nil

	case Closed:
		// relay → client, the relay's alias. The relay also sends it when
		// a server closes by itself, so no close is required first.
		var sv *server
		if out {
			sv = s.servers[v.Alias]
		} else {
			sv = s.serverByRemote(v.Alias)
		}
		if sv == nil {
			return a, unknown(dir, m, "server", v.Alias)
		}
		s.removeServer(sv)
		a.Server, a.Gone = sv.local, true
		return a, nil

	case Incoming:
		var sv *server
		if out {
			sv = s.servers[v.ServerAlias]
		} else {
			sv = s.serverByRemote(v.ServerAlias)
		}
		if sv == nil {
			return a, unknown(dir, m, "server", v.ServerAlias)
		}
		if _, dup := s.firewall[v.ID]; dup {
			return a, protoErr(dir, m, "question %d already pending", v.ID)
		}
		if err := s.limit("requests", s.pending(), s.limits.Requests); err != nil {
			return a, err
		}
		s.firewall[v.ID] = sv.local
		a.Server, a.Request = sv.local, v.ID
		return a, nil

	case Accept, Deny:
		id := aliasOf(m)
		srv, ok := s.firewall[id]
		if !ok {
			return a, unknown(dir, m, "firewall question", id)
		}
		delete(s.firewall, id)
		a.Server, a.Request = srv, id
		return a, nil

	// --- queries ---
	case Lookup, Announce, Unannounce:
		id := aliasOf(m)
		if _, dup := s.queries[id]; dup || (out && s.inUse(id)) {
			return a, protoErr(dir, m, "query id %d in use", id)
		}
		if err := s.limit("queries", len(s.queries), s.limits.Queries); err != nil {
			return a, err
		}
		s.queries[id] = &query{id: id, signee: t != TypeLookup}
		a.Query = id
		return a, nil

	case Result, Finished:
		id := aliasOf(m)
		if _, ok := s.queries[id]; !ok {
			return a, unknown(dir, m, "query", id)
		}
		if t == TypeFinished {
			delete(s.queries, id)
			for rid, signee := range s.signatures {
				if signee == id {
					delete(s.signatures, rid)
				}
			}
			a.Gone = true
		}
		a.Query = id
		return a, nil

	case SignAnnounce, SignUnannounce:
		var id, signee uint32
		if sa, ok := m.(SignAnnounce); ok {
			id, signee = sa.ID, sa.Signee
		} else {
			su := m.(SignUnannounce)
			id, signee = su.ID, su.Signee
		}
		if !s.signeeKnown(signee) {
			return a, unknown(dir, m, "signee", signee)
		}
		if _, dup := s.signatures[id]; dup {
			return a, protoErr(dir, m, "request %d already pending", id)
		}
		if err := s.limit("requests", s.pending(), s.limits.Requests); err != nil {
			return a, err
		}
		s.signatures[id] = signee
		a.Request, a.Query = id, signee
		return a, nil

	case Signature:
		if _, ok := s.signatures[v.ID]; !ok {
			return a, unknown(dir, m, "signature request", v.ID)
		}
		a.Request, a.Query = v.ID, s.signatures[v.ID]
		delete(s.signatures, v.ID)
		return a, nil

	// --- non-custodial Noise ---
	case NoiseSend:
		h := s.handshakes[v.ID]
		if v.IsInitiator && h == nil {
			// The first message of an outgoing handshake names the
			// client's connecting stream.
			var st *stream
			if out {
				st = s.byRemote(v.RemoteStreamAlias)
			} else {
				st = s.streams[v.RemoteStreamAlias]
			}
			if st == nil || st.inbound || st.confirmed {
				return a, unknown(dir, m, "connecting stream", v.RemoteStreamAlias)
			}
			if err := s.limit("requests", s.pending(), s.limits.Requests); err != nil {
				return a, err
			}
			h = &handshake{id: v.ID, initiator: true, stream: st.local}
			s.handshakes[v.ID] = h
		} else if h == nil || h.initiator != v.IsInitiator {
			return a, unknown(dir, m, "handshake", v.ID)
		}
		return s.noiseRequest(dir, m, h, a)

	case NoiseReceive:
		h := s.handshakes[v.ID]
		if !v.IsInitiator && h == nil {
			// The first message of an inbound handshake names the
			// relay's server.
			var sv *server
			if out {
				sv = s.servers[v.ServerAlias]
			} else {
				sv = s.serverByRemote(v.ServerAlias)
			}
			if sv == nil {
				return a, unknown(dir, m, "server", v.ServerAlias)
			}
			if err := s.limit("requests", s.pending(), s.limits.Requests); err != nil {
				return a, err
			}
			h = &handshake{id: v.ID, server: sv.local}
			s.handshakes[v.ID] = h
		} else if h == nil || h.initiator != v.IsInitiator {
			return a, unknown(dir, m, "handshake", v.ID)
		}
		return s.noiseRequest(dir, m, h, a)

	case NoiseReply:
		h := s.handshakes[v.ID]
		if h == nil || !h.awaiting {
			return a, unknown(dir, m, "noise request", v.ID)
		}
		if h.initiator != v.IsInitiator {
			return a, protoErr(dir, m, "initiator flag does not match handshake %d", v.ID)
		}
		h.awaiting = false
		a.Request, a.Stream, a.Server, a.Initiator = h.id, h.stream, h.server, h.initiator
		if !v.IsInitiator && !v.Complete && len(v.Payload) == 0 {
			// A responder's empty reply denies the connection; the
			// reference's relay forgets the handshake.
			delete(s.handshakes, v.ID)
			a.Gone = true
		}
		return a, nil
	}
	return a, protoErr(dir, m, "not handled")
}

// noiseRequest marks h as waiting for its reply; one request at a time.
func (s *Session) noiseRequest(dir string, m Message, h *handshake, a Action) (Action, error) {
	if h.awaiting {
		return a, protoErr(dir, m, "handshake %d already waits for a reply", h.id)
	}
	h.awaiting = true
	a.Request, a.Stream, a.Server, a.Initiator = h.id, h.stream, h.server, h.initiator
	return a, nil
}

// consumeHandshake checks and drops the handshake a non-custodial open
// or connection refers to.
func (s *Session) consumeHandshake(dir string, m Message, custodial bool, id uint32, initiator bool, owner uint32) error {
	if custodial {
		return nil
	}
	h := s.handshakes[id]
	if h == nil || h.initiator != initiator || h.awaiting {
		return unknown(dir, m, "completed handshake", id)
	}
	if (initiator && h.stream != owner) || (!initiator && h.server != owner) {
		return protoErr(dir, m, "handshake %d belongs to another object", id)
	}
	delete(s.handshakes, id)
	return nil
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
