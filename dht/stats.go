package dht

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/udx"
)

// Handshake outcomes, as Stats.Handshakes names them: what a listener of
// this node did with each fresh PEER_HANDSHAKE it was sent (repeats of one
// client's first message through other relays are not counted again).
const (
	HandshakeAccepted        = "accepted"         // answered; the client may connect
	HandshakeFirewall        = "firewall"         // refused by the listener's firewall (an allow list)
	HandshakeVersionMismatch = "version_mismatch" // the client speaks another protocol version
	HandshakeInvalid         = "invalid"          // the Noise message or its payload did not decode
	HandshakeRateLimited     = "rate_limited"     // over the per-source handshake rate: silence
	HandshakeSlotsFull       = "slots_full"       // every handshake slot in use: silence
	HandshakeError           = "error"            // our side failed to answer
)

var handshakeOutcomes = [...]string{HandshakeAccepted, HandshakeFirewall, HandshakeVersionMismatch,
	HandshakeInvalid, HandshakeRateLimited, HandshakeSlotsFull, HandshakeError}

// HandshakeOutcomes lists every outcome Stats.Handshakes may hold, so that
// a metrics exporter can report each one, zero included.
func HandshakeOutcomes() []string { return handshakeOutcomes[:] }

// Stats are a Node's health counters (Node.Stats), for `keytunnel status`
// and metrics. Counters count since the node started.
type Stats struct {
	RPC          rpc.Stats // dht-rpc requests, responses, timeouts, ...
	RoutingNodes int       // routing table size
	Firewalled   bool

	// Handshakes counts our listeners' answers to PEER_HANDSHAKE by
	// outcome (HandshakeOutcomes).
	Handshakes map[string]uint64
	// Dials and DialFailures count outgoing connections (Dial), the
	// blind-relay connections that pairing makes included.
	Dials, DialFailures uint64
	// HolepunchAttempts counts punches started, on either side of a
	// connection; HolepunchSuccesses those that found a direct path.
	HolepunchAttempts, HolepunchSuccesses uint64
	// RelayFallbacks counts connections that went through a blind relay
	// because no direct path came first; RelayUpgrades those of them
	// that later moved to a direct path.
	RelayFallbacks, RelayUpgrades uint64
}

// nodeStats are the live counters behind Stats.
type nodeStats struct {
	handshakes          [len(handshakeOutcomes)]atomic.Uint64
	dials, dialFailures atomic.Uint64
	punchAttempts       atomic.Uint64
	punchSuccesses      atomic.Uint64
	relayFallbacks      atomic.Uint64
	relayUpgrades       atomic.Uint64

	// relayed maps the streams that run through a blind relay to their
	// link, for Path.
	mu      sync.Mutex
	relayed map[*udx.Stream]*relayLink
}

func (s *nodeStats) handshake(outcome string) {
	for i, o := range handshakeOutcomes {
		if o == outcome {
			s.handshakes[i].Add(1)
			return
		}
	}
}

func (s *nodeStats) setRelayed(st *udx.Stream, link *relayLink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if link == nil {
		delete(s.relayed, st)
		return
	}
	if s.relayed == nil {
		s.relayed = map[*udx.Stream]*relayLink{}
	}
	s.relayed[st] = link
}

// Stats returns the node's counters. It asks the node's loop for the
// dht-rpc counters, so ctx bounds the wait.
func (n *Node) Stats(ctx context.Context) (Stats, error) {
	r, err := n.rpc.Stats(ctx)
	if err != nil {
		return Stats{}, err
	}
	snap := n.rpc.State()
	s := Stats{
		RPC:                r,
		RoutingNodes:       snap.Nodes,
		Firewalled:         snap.Firewalled,
		Handshakes:         make(map[string]uint64, len(handshakeOutcomes)),
		Dials:              n.stats.dials.Load(),
		DialFailures:       n.stats.dialFailures.Load(),
		HolepunchAttempts:  n.stats.punchAttempts.Load(),
		HolepunchSuccesses: n.stats.punchSuccesses.Load(),
		RelayFallbacks:     n.stats.relayFallbacks.Load(),
		RelayUpgrades:      n.stats.relayUpgrades.Load(),
	}
	for i, o := range handshakeOutcomes {
		s.Handshakes[o] = n.stats.handshakes[i].Load()
	}
	return s, nil
}

// Path is how a connection reaches its peer right now.
type Path struct {
	// Relay is the blind relay the connection goes through; zero when it
	// is direct.
	Relay key.PublicKey
	// Addr is where our packets go: the peer, or the relay.
	Addr netip.AddrPort
}

// String is "direct ADDR" or "relay KEY (ADDR)".
func (p Path) String() string {
	if p.Relay.IsZero() {
		if !p.Addr.IsValid() {
			return "direct"
		}
		return "direct " + p.Addr.String()
	}
	return "relay " + p.Relay.String() + " (" + p.Addr.String() + ")"
}

// PathOf says how c reaches its peer now: directly, or through a blind
// relay (which a later direct path may replace, see RelayThrough). c must
// be a connection of this node.
func (n *Node) PathOf(c *Conn) Path {
	st, ok := c.Raw().(*udx.Stream)
	if !ok {
		return Path{}
	}
	var p Path
	if a := st.RemoteAddr(); a != nil {
		p.Addr, _ = netip.ParseAddrPort(a.String())
	}
	n.stats.mu.Lock()
	link := n.stats.relayed[st]
	n.stats.mu.Unlock()
	if link != nil && sameAddr(link.addr, p.Addr) {
		p.Relay = link.relayPK
	}
	return p
}
