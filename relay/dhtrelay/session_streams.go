package dhtrelay

// Streams: connect (client → relay, outgoing) and open (the relay's
// answer), connection (relay → client, inbound on a server) and connected
// (the client's answer), data, end and destroy.

// connect records a new outgoing stream under the client's alias.
func (s *Session) connect(d dirMsg, v Connect, a Action) (Action, error) {
	if err := s.limit("streams", len(s.streams), s.limits.Streams); err != nil {
		return a, err
	}
	if d.out {
		if s.inUse(v.Alias) {
			return a, d.protoErr("alias %d in use", v.Alias)
		}
		s.streams[v.Alias] = &stream{local: v.Alias}
		a.Stream = v.Alias
		return a, nil
	}
	if s.byRemote(v.Alias) != nil {
		return a, d.protoErr("stream alias %d in use", v.Alias)
	}
	l := s.NextID()
	s.streams[l] = &stream{local: l, remote: v.Alias, hasRemote: true}
	s.streamByRem[v.Alias] = l
	a.Stream, a.New = l, l
	return a, nil
}

// open (relay → client) pairs the relay's alias R with the client's
// connecting stream A, and ends its handshake if non-custodial.
func (s *Session) open(d dirMsg, v Open, a Action) (Action, error) {
	var st *stream
	if d.out {
		st = s.streams[v.Alias]
		if st == nil || st.inbound || st.remote != v.RemoteAlias {
			return a, d.unknown("stream", v.Alias)
		}
	} else {
		st = s.streams[v.RemoteAlias]
		if st == nil || st.inbound || st.hasRemote {
			return a, d.unknown("connecting stream", v.RemoteAlias)
		}
		if s.byRemote(v.Alias) != nil {
			return a, d.protoErr("stream alias %d in use", v.Alias)
		}
	}
	if st.confirmed {
		return a, d.protoErr("stream %d already open", st.local)
	}
	if err := s.consumeHandshake(d, v.Custodial, v.HandshakeID, true, st.local); err != nil {
		return a, err
	}
	st.confirmed = true
	if !d.out {
		st.remote, st.hasRemote = v.Alias, true
		s.streamByRem[v.Alias] = st.local
	}
	a.Stream = st.local
	return a, nil
}

// connection (relay → client) records a new inbound stream C on the
// relay's server S′.
func (s *Session) connection(d dirMsg, v Connection, a Action) (Action, error) {
	if err := s.limit("streams", len(s.streams), s.limits.Streams); err != nil {
		return a, err
	}
	var sv *server
	if d.out {
		sv = s.servers[v.ServerAlias]
		if s.inUse(v.Alias) {
			return a, d.protoErr("alias %d in use", v.Alias)
		}
	} else {
		sv = s.serverByRemote(v.ServerAlias)
		if s.byRemote(v.Alias) != nil {
			return a, d.protoErr("stream alias %d in use", v.Alias)
		}
	}
	if sv == nil {
		return a, d.unknown("server", v.ServerAlias)
	}
	if err := s.consumeHandshake(d, v.Custodial, v.HandshakeID, false, sv.local); err != nil {
		return a, err
	}
	if d.out {
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
}

// connected (client → relay) pairs the client's alias C′ with the
// relay's inbound stream C.
func (s *Session) connected(d dirMsg, v Connected, a Action) (Action, error) {
	var st *stream
	if d.out {
		st = s.streams[v.Alias]
		if st == nil || !st.inbound || st.remote != v.RemoteAlias {
			return a, d.unknown("inbound stream", v.Alias)
		}
	} else {
		st = s.streams[v.RemoteAlias]
		if st == nil || !st.inbound || st.hasRemote {
			return a, d.unknown("unconfirmed inbound stream", v.RemoteAlias)
		}
		if s.byRemote(v.Alias) != nil {
			return a, d.protoErr("stream alias %d in use", v.Alias)
		}
	}
	if st.confirmed {
		return a, d.protoErr("stream %d already confirmed", st.local)
	}
	st.confirmed = true
	if !d.out {
		st.remote, st.hasRemote = v.Alias, true
		s.streamByRem[v.Alias] = st.local
	}
	a.Stream = st.local
	return a, nil
}

// streamData resolves the stream of a data or end message.
func (s *Session) streamData(d dirMsg, a Action) (Action, error) {
	alias := aliasOf(d.m)
	st := s.streamFor(d.out, alias)
	if st == nil {
		return a, d.unknown("stream", alias)
	}
	a.Stream = st.local
	return a, nil
}

// destroy drops a stream. Its alias is, when paired, the sender's; when
// unpaired, the receiver's alias of a stream still connecting (the reference's relay sends it when
// connect fails before open; the client never sends it).
func (s *Session) destroy(d dirMsg, v Destroy, a Action) (Action, error) {
	var st *stream
	switch {
	case v.Paired && d.out, !v.Paired && !d.out:
		st = s.streams[pick(v.Paired, v.Alias, v.RemoteAlias)]
	default:
		st = s.byRemote(pick(v.Paired, v.Alias, v.RemoteAlias))
	}
	if st == nil {
		return a, d.unknown("stream", pick(v.Paired, v.Alias, v.RemoteAlias))
	}
	s.removeStream(st)
	a.Stream, a.Gone = st.local, true
	return a, nil
}
