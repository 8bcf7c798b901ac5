package dhtrelay

// Queries (lookup, announce, unannounce and their results) and the
// signature requests of non-custodial announces.

// query records a lookup, announce or unannounce under its id.
func (s *Session) query(d dirMsg, a Action) (Action, error) {
	id := aliasOf(d.m)
	if _, dup := s.queries[id]; dup || (d.out && s.inUse(id)) {
		return a, d.protoErr("query id %d in use", id)
	}
	if err := s.limit("queries", len(s.queries), s.limits.Queries); err != nil {
		return a, err
	}
	s.queries[id] = &query{id: id, signee: d.m.Type() != TypeLookup}
	a.Query = id
	return a, nil
}

// queryReply resolves a result, or ends the query (finished) with its
// signature requests.
func (s *Session) queryReply(d dirMsg, a Action) (Action, error) {
	id := aliasOf(d.m)
	if _, ok := s.queries[id]; !ok {
		return a, d.unknown("query", id)
	}
	if d.m.Type() == TypeFinished {
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
}

// signRequest records the relay's request for a signature of an
// announce or unannounce.
func (s *Session) signRequest(d dirMsg, a Action) (Action, error) {
	var id, signee uint32
	if sa, ok := d.m.(SignAnnounce); ok {
		id, signee = sa.ID, sa.Signee
	} else {
		su := d.m.(SignUnannounce)
		id, signee = su.ID, su.Signee
	}
	if !s.signeeKnown(signee) {
		return a, d.unknown("signee", signee)
	}
	if _, dup := s.signatures[id]; dup {
		return a, d.protoErr("request %d already pending", id)
	}
	if err := s.limit("requests", s.pending(), s.limits.Requests); err != nil {
		return a, err
	}
	s.signatures[id] = signee
	a.Request, a.Query = id, signee
	return a, nil
}

// signature settles a signature request.
func (s *Session) signature(d dirMsg, v Signature, a Action) (Action, error) {
	if _, ok := s.signatures[v.ID]; !ok {
		return a, d.unknown("signature request", v.ID)
	}
	a.Request, a.Query = v.ID, s.signatures[v.ID]
	delete(s.signatures, v.ID)
	return a, nil
}
