package dht

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/udx"
)

// connState is what a Node keeps for connections: the servers listening on
// it (by target), the punch handlers waiting for 1-byte datagrams, and the
// node-wide random-punch limit of hyperdht (one at a time, 20 s apart).
type connState struct {
	mu       sync.Mutex
	servers  map[[32]byte]*Listener
	punchers map[*punchWatch]struct{}
	routes   map[[32]byte]route
	closed   bool

	randomPunches   int
	lastRandomPunch time.Time
}

// punchWatch receives the 1-byte datagrams that arrive while a holepunch
// runs. hosts filters them to the peer's hosts (nil: any host).
type punchWatch struct {
	hosts func(netip.Addr) bool
	fn    func(s *udx.Socket, from netip.AddrPort)
}

func (c *connState) init() {
	c.servers = make(map[[32]byte]*Listener)
	c.punchers = make(map[*punchWatch]struct{})
	c.routes = make(map[[32]byte]route)
}

const randomPunchInterval = 20 * time.Second

// acquireRandomPunch takes the node's random-punch slot if it is free and
// the last random punch is old enough.
func (n *Node) acquireRandomPunch(now time.Time) bool {
	c := &n.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.randomPunches >= 1 || (!c.lastRandomPunch.IsZero() && now.Sub(c.lastRandomPunch) < randomPunchInterval) {
		return false
	}
	c.randomPunches++
	return true
}

func (n *Node) releaseRandomPunch(now time.Time) {
	c := &n.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	c.randomPunches--
	c.lastRandomPunch = now
}

func (n *Node) watchPunches(w *punchWatch) (stop func()) {
	c := &n.conns
	c.mu.Lock()
	c.punchers[w] = struct{}{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.punchers, w)
		c.mu.Unlock()
	}
}

// onPunch runs on the socket's reader for every 1-byte datagram.
func (n *Node) onPunch(s *udx.Socket, from netip.AddrPort) {
	c := &n.conns
	c.mu.Lock()
	var fns []func(*udx.Socket, netip.AddrPort)
	for w := range c.punchers {
		if w.hosts == nil || w.hosts(from.Addr()) {
			fns = append(fns, w.fn)
		}
	}
	c.mu.Unlock()
	for _, f := range fns {
		f(s, from)
	}
}

func (n *Node) server(target [32]byte) *Listener {
	c := &n.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[target]
}

// closeConns closes every listener; Close waits for them.
func (n *Node) closeConns() {
	c := &n.conns
	c.mu.Lock()
	c.closed = true
	ls := make([]*Listener, 0, len(c.servers))
	for _, l := range c.servers {
		ls = append(ls, l)
	}
	c.mu.Unlock()
	for _, l := range ls {
		l.closeNow()
	}
}

// onRouted handles PEER_HANDSHAKE and PEER_HOLEPUNCH as hyperdht's router
// does: a server answers the ones for its own target, any other node
// forwards them along its router entry (a self-announce it stored). It
// runs on the rpc loop, so servers answer from their own goroutine.
func (n *Node) onRouted(r *rpc.Request) {
	if r.Target == nil || r.Value == nil {
		return
	}
	target := [32]byte(*r.Target)
	if wire.Command(r.Command) == wire.CmdPeerHandshake {
		n.onPeerHandshake(r, target)
	} else {
		n.onPeerHolepunch(r, target)
	}
}

func (n *Node) relayOf(target [32]byte) netip.AddrPort {
	if f, ok := n.store.Forward(target, time.Now()); ok && f.Relay.IsValid() {
		return f.Relay
	}
	return netip.AddrPort{}
}

var replyNoExtras = &rpc.ReplyOptions{OmitToken: true, OmitCloserNodes: true}

func (n *Node) onPeerHandshake(r *rpc.Request, target [32]byte) {
	hs, err := wire.DecodeHandshake(r.Value)
	if err != nil {
		return
	}
	if l := n.server(target); l != nil {
		if hs.Noise == nil {
			return
		}
		// The Noise work and the firewall callback must not hold the loop.
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			msg2, ok := l.onHandshake(hs.Noise, hs.PeerAddress, r)
			if !ok {
				return
			}
			switch hs.Mode {
			case wire.ModeFromClient:
				out := wire.Handshake{Mode: wire.ModeReply, Noise: msg2}
				r.Reply(out.Append(nil), replyNoExtras)
			case wire.ModeFromRelay:
				out := wire.Handshake{Mode: wire.ModeFromServer, Noise: msg2, PeerAddress: hs.PeerAddress}
				r.Relay(out.Append(nil), r.From, nil)
			case wire.ModeFromSecondRelay:
				if !hs.RelayAddress.IsValid() {
					return
				}
				out := wire.Handshake{Mode: wire.ModeFromServer, Noise: msg2, PeerAddress: hs.PeerAddress}
				r.Relay(out.Append(nil), hs.RelayAddress, nil)
			}
		}()
		return
	}
	relay := n.relayOf(target)
	switch hs.Mode {
	case wire.ModeFromClient:
		if hs.Noise == nil {
			return
		}
		if !relay.IsValid() && !hs.RelayAddress.IsValid() {
			// Help the client route: closer nodes, no token.
			r.Reply(nil, &rpc.ReplyOptions{OmitToken: true})
			return
		}
		to := relay
		if hs.RelayAddress.IsValid() {
			to = hs.RelayAddress
		}
		out := wire.Handshake{Mode: wire.ModeFromRelay, Noise: hs.Noise, PeerAddress: r.From}
		r.Relay(out.Append(nil), to, nil)
	case wire.ModeFromRelay:
		if !relay.IsValid() || hs.Noise == nil {
			return
		}
		out := wire.Handshake{Mode: wire.ModeFromSecondRelay, Noise: hs.Noise, PeerAddress: hs.PeerAddress, RelayAddress: r.From}
		r.Relay(out.Append(nil), relay, nil)
	case wire.ModeFromServer:
		if !hs.PeerAddress.IsValid() || hs.Noise == nil {
			return
		}
		out := wire.Handshake{Mode: wire.ModeReply, Noise: hs.Noise, PeerAddress: r.From}
		r.Reply(out.Append(nil), &rpc.ReplyOptions{To: hs.PeerAddress, OmitToken: true, OmitCloserNodes: true})
	}
}

func (n *Node) onPeerHolepunch(r *rpc.Request, target [32]byte) {
	hp, err := wire.DecodeHolepunch(r.Value)
	if err != nil {
		return
	}
	l := n.server(target)
	relay := n.relayOf(target)
	switch hp.Mode {
	case wire.ModeFromClient:
		to := hp.PeerAddress
		if !to.IsValid() {
			to = relay
		}
		if !to.IsValid() {
			return
		}
		out := wire.Holepunch{Mode: wire.ModeFromRelay, ID: hp.ID, Payload: hp.Payload, PeerAddress: r.From}
		r.Relay(out.Append(nil), to, nil)
	case wire.ModeFromRelay:
		if l == nil || !hp.PeerAddress.IsValid() {
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			payload, ok := l.onHolepunch(hp.ID, hp.Payload, hp.PeerAddress, r)
			if !ok {
				return
			}
			out := wire.Holepunch{Mode: wire.ModeFromServer, ID: 0, Payload: payload, PeerAddress: hp.PeerAddress}
			r.Relay(out.Append(nil), r.From, nil)
		}()
	case wire.ModeFromServer:
		if !hp.PeerAddress.IsValid() {
			return
		}
		out := wire.Holepunch{Mode: wire.ModeReply, ID: hp.ID, Payload: hp.Payload, PeerAddress: r.From}
		r.Reply(out.Append(nil), &rpc.ReplyOptions{To: hp.PeerAddress, OmitToken: true, OmitCloserNodes: true})
	}
}

// peerHandshake sends a PEER_HANDSHAKE FROM_CLIENT to a node and checks the
// reply as the reference's router does.
func (n *Node) peerHandshake(ctx context.Context, target [32]byte, msg1 []byte, to netip.AddrPort, sock rpc.Socket, firstTimeout time.Duration) (hsReply, error) {
	id := rpc.ID(target)
	v := (&wire.Handshake{Mode: wire.ModeFromClient, Noise: msg1}).Append(nil)
	res, err := n.rpc.Request(ctx, to, rpc.RequestOptions{Command: uint64(wire.CmdPeerHandshake), Target: &id, Value: v, Socket: sock, FirstTimeout: firstTimeout})
	if err != nil {
		return hsReply{}, err
	}
	hs, err := wire.DecodeHandshake(res.Value)
	if res.Value == nil || err != nil || hs.Mode != wire.ModeReply || res.From != to || hs.Noise == nil {
		return hsReply{}, ErrBadHandshakeReply
	}
	out := hsReply{noise: hs.Noise, relayed: hs.PeerAddress.IsValid(), serverAddress: to, clientAddress: res.To, rtt: res.RoundTrip()}
	if out.relayed {
		out.serverAddress = hs.PeerAddress
	}
	return out, nil
}

type hsReply struct {
	noise         []byte
	relayed       bool
	serverAddress netip.AddrPort
	clientAddress netip.AddrPort
	// rtt: the request's round trip, through the node to the server
	// and back (0: unknown, the request was sent more than once).
	rtt time.Duration
}

// peerHolepunch sends a PEER_HOLEPUNCH FROM_CLIENT through a relay.
func (n *Node) peerHolepunch(ctx context.Context, target [32]byte, id uint64, payload []byte, peerAddress, to netip.AddrPort) (hpReply, error) {
	t := rpc.ID(target)
	v := (&wire.Holepunch{Mode: wire.ModeFromClient, ID: id, Payload: payload, PeerAddress: peerAddress}).Append(nil)
	res, err := n.rpc.Request(ctx, to, rpc.RequestOptions{Command: uint64(wire.CmdPeerHolepunch), Target: &t, Value: v})
	if err != nil {
		return hpReply{}, err
	}
	hp, err := wire.DecodeHolepunch(res.Value)
	if res.Value == nil || err != nil || hp.Mode != wire.ModeReply || res.From != to {
		return hpReply{}, ErrBadHolepunchReply
	}
	out := hpReply{from: res.From, to: res.To, payload: hp.Payload, peerAddress: to}
	if hp.PeerAddress.IsValid() {
		out.peerAddress = hp.PeerAddress
	}
	return out, nil
}

type hpReply struct {
	from, to    netip.AddrPort
	payload     []byte
	peerAddress netip.AddrPort
}

// route is a path to a server that both sides allowed to be reused
// (udx.reusableSocket): a later Dial handshakes with the server there
// directly, skipping the lookup and the punch (socket-pool.js routes).
type route struct {
	sock *udx.Socket
	addr netip.AddrPort
	rtt  time.Duration // the stream's smoothed RTT when remembered (0: none)
}

func (n *Node) route(pk [32]byte) (route, bool) {
	c := &n.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.routes[pk]
	return r, ok
}

func (n *Node) setRoute(pk [32]byte, r *route) {
	c := &n.conns
	c.mu.Lock()
	defer c.mu.Unlock()
	if r == nil {
		delete(c.routes, pk)
		return
	}
	if len(c.routes) >= 4096 {
		clear(c.routes) // a cache: dropping it costs lookups, not correctness
	}
	c.routes[pk] = *r
}
