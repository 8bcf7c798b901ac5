package dhtrelay

// Non-custodial Noise handshakes: the relay asks the client, which holds
// the key, to write (NoiseSend) or read (NoiseReceive) each handshake
// message, one request at a time per handshake, and the client answers
// (NoiseReply).

// noiseSend (relay → client) asks for the next message of a handshake;
// the first of an outgoing one names the connecting stream and starts
// the handshake.
func (s *Session) noiseSend(d dirMsg, v NoiseSend, a Action) (Action, error) {
	h := s.handshakes[v.ID]
	if v.IsInitiator && h == nil {
		// The first message of an outgoing handshake names the
		// client's connecting stream.
		var st *stream
		if d.out {
			st = s.byRemote(v.RemoteStreamAlias)
		} else {
			st = s.streams[v.RemoteStreamAlias]
		}
		if st == nil || st.inbound || st.confirmed {
			return a, d.unknown("connecting stream", v.RemoteStreamAlias)
		}
		if err := s.limit("requests", s.pending(), s.limits.Requests); err != nil {
			return a, err
		}
		h = &handshake{id: v.ID, initiator: true, stream: st.local}
		s.handshakes[v.ID] = h
	} else if h == nil || h.initiator != v.IsInitiator {
		return a, d.unknown("handshake", v.ID)
	}
	return s.noiseRequest(d, h, a)
}

// noiseReceive (relay → client) asks the client to read a received
// handshake message; the first of an inbound one names the server and
// starts the handshake.
func (s *Session) noiseReceive(d dirMsg, v NoiseReceive, a Action) (Action, error) {
	h := s.handshakes[v.ID]
	if !v.IsInitiator && h == nil {
		// The first message of an inbound handshake names the
		// relay's server.
		sv := s.serverFor(d.out, v.ServerAlias)
		if sv == nil {
			return a, d.unknown("server", v.ServerAlias)
		}
		if err := s.limit("requests", s.pending(), s.limits.Requests); err != nil {
			return a, err
		}
		h = &handshake{id: v.ID, server: sv.local}
		s.handshakes[v.ID] = h
	} else if h == nil || h.initiator != v.IsInitiator {
		return a, d.unknown("handshake", v.ID)
	}
	return s.noiseRequest(d, h, a)
}

// noiseReply answers the handshake's outstanding request; a responder's
// empty reply denies the connection.
func (s *Session) noiseReply(d dirMsg, v NoiseReply, a Action) (Action, error) {
	h := s.handshakes[v.ID]
	if h == nil || !h.awaiting {
		return a, d.unknown("noise request", v.ID)
	}
	if h.initiator != v.IsInitiator {
		return a, d.protoErr("initiator flag does not match handshake %d", v.ID)
	}
	h.awaiting = false
	h.complete = v.Complete
	a.Request, a.Stream, a.Server, a.Initiator = h.id, h.stream, h.server, h.initiator
	if !v.IsInitiator && !v.Complete && len(v.Payload) == 0 {
		// A responder's empty reply denies the connection; the
		// reference's relay forgets the handshake.
		delete(s.handshakes, v.ID)
		a.Gone = true
	}
	return a, nil
}

// noiseRequest marks h as waiting for its reply; one request at a time,
// and none once a reply said the handshake is complete.
//
// The Node relay asks twice when two nodes' PEER_HANDSHAKE replies race
// (hyperdht connect.js connectThroughNode calls recv for each), and its
// HandshakeProxy keeps one pending reply: a second reply crashes it
// ("_onNoiseReply is not a function"). The reference client throws on a
// complete handshake and answers nothing, so the request is refused here,
// and the handshake stays ready for the open that ends it. That open
// comes only from a server that reaches the relay directly: the race also
// stalls the relay's connect before its hole punch, which Client.Dial
// meets by dialing again (Client.noteRaceLocked).
func (s *Session) noiseRequest(d dirMsg, h *handshake, a Action) (Action, error) {
	if h.awaiting {
		return a, d.protoErr("handshake %d already waits for a reply", h.id)
	}
	if h.complete {
		return a, d.protoErr("handshake %d is complete", h.id)
	}
	h.awaiting = true
	a.Request, a.Stream, a.Server, a.Initiator = h.id, h.stream, h.server, h.initiator
	return a, nil
}

// consumeHandshake checks and drops the handshake a non-custodial open
// or connection refers to.
func (s *Session) consumeHandshake(d dirMsg, custodial bool, id uint32, initiator bool, owner uint32) error {
	if custodial {
		return nil
	}
	h := s.handshakes[id]
	if h == nil || h.initiator != initiator || h.awaiting {
		return d.unknown("completed handshake", id)
	}
	if (initiator && h.stream != owner) || (!initiator && h.server != owner) {
		return d.protoErr("handshake %d belongs to another object", id)
	}
	delete(s.handshakes, id)
	return nil
}
