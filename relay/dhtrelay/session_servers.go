package dhtrelay

// Servers: listen and listening, close and closed, and the firewall
// questions (incoming, accept, deny).

// listen records a new server under the client's alias.
func (s *Session) listen(d dirMsg, v Listen, a Action) (Action, error) {
	if err := s.limit("servers", len(s.servers), s.limits.Servers); err != nil {
		return a, err
	}
	if d.out {
		if s.inUse(v.Alias) {
			return a, d.protoErr("alias %d in use", v.Alias)
		}
		s.servers[v.Alias] = &server{local: v.Alias}
		a.Server = v.Alias
		return a, nil
	}
	if s.serverByRemote(v.Alias) != nil {
		return a, d.protoErr("server alias %d in use", v.Alias)
	}
	l := s.NextID()
	s.servers[l] = &server{local: l, remote: v.Alias, hasRemote: true}
	s.serverByRem[v.Alias] = l
	a.Server, a.New = l, l
	return a, nil
}

// listening (relay → client) pairs the relay's alias with the client's
// opening server.
func (s *Session) listening(d dirMsg, v Listening, a Action) (Action, error) {
	var sv *server
	if d.out {
		sv = s.servers[v.Alias]
		if sv == nil || sv.remote != v.RemoteAlias {
			return a, d.unknown("server", v.Alias)
		}
	} else {
		sv = s.servers[v.RemoteAlias]
		if sv == nil || sv.hasRemote {
			return a, d.unknown("opening server", v.RemoteAlias)
		}
		if s.serverByRemote(v.Alias) != nil {
			return a, d.protoErr("server alias %d in use", v.Alias)
		}
		sv.remote, sv.hasRemote = v.Alias, true
		s.serverByRem[v.Alias] = sv.local
	}
	a.Server = sv.local
	return a, nil
}

// closeServer (client → relay, the client's alias) marks a server as
// closing.
func (s *Session) closeServer(d dirMsg, v Close, a Action) (Action, error) {
	sv := s.serverFor(d.out, v.Alias)
	if sv == nil {
		return a, d.unknown("server", v.Alias)
	}
	sv.closing = true
	a.Server = sv.local
	return a, nil
}

// closed (relay → client, the relay's alias) drops a server. The relay
// also sends it when a server closes by itself, so no close is required
// first.
func (s *Session) closed(d dirMsg, v Closed, a Action) (Action, error) {
	sv := s.serverFor(d.out, v.Alias)
	if sv == nil {
		return a, d.unknown("server", v.Alias)
	}
	s.removeServer(sv)
	a.Server, a.Gone = sv.local, true
	return a, nil
}

// incoming records the relay's firewall question about a client of a
// server.
func (s *Session) incoming(d dirMsg, v Incoming, a Action) (Action, error) {
	sv := s.serverFor(d.out, v.ServerAlias)
	if sv == nil {
		return a, d.unknown("server", v.ServerAlias)
	}
	if _, dup := s.firewall[v.ID]; dup {
		return a, d.protoErr("question %d already pending", v.ID)
	}
	if err := s.limit("requests", s.pending(), s.limits.Requests); err != nil {
		return a, err
	}
	s.firewall[v.ID] = sv.local
	a.Server, a.Request = sv.local, v.ID
	return a, nil
}

// firewallAnswer settles a firewall question (accept or deny).
func (s *Session) firewallAnswer(d dirMsg, a Action) (Action, error) {
	id := aliasOf(d.m)
	srv, ok := s.firewall[id]
	if !ok {
		return a, d.unknown("firewall question", id)
	}
	delete(s.firewall, id)
	a.Server, a.Request = srv, id
	return a, nil
}
