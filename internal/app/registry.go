package app

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/tunnel"
)

// registry is what this process runs, for `keytunnel status` (through the
// control socket) and --metrics: the tunnels with their counters, and the
// network whose DHT health they report. The counters themselves live in
// tunnel and dht; this only knows where to read them.
type registry struct {
	mu      sync.Mutex
	command string
	started time.Time
	nw      Network
	dht     dhtStatser // a node other than nw's (testnet's bootstrap node)
	tunnels []*regTunnel
	server  *regServer
}

// regServer is what a relay, dht-relay or testnet process serves.
type regServer struct {
	role      string // relay, dht-relay, testnet
	publicKey string // relay: its key
	listen    string // dht-relay: its URL; testnet: its bootstrap list
	since     time.Time
	counters  func() []serverCounter
}

// serverCounter is one counter of a regServer; metrics.go knows each
// role's names.
type serverCounter struct {
	name  string
	value uint64
}

// regTunnel is one running tunnel: an expose or forward command, an `up`
// entry, or connect.
type regTunnel struct {
	name      string // up: the entry's name; else the local address
	role      string // expose, forward, connect
	publicKey string // expose: the key served
	remote    string // forward, connect: the key dialed
	service   string // forward, connect: the named service behind remote
	local     string // expose: the target; forward: the listening address
	udp       bool   // a UDP service: connections are UDP flows
	stats     func() tunnel.Stats
}

func (r *registry) setCommand(cmd string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.command, r.started = cmd, time.Now()
}

func (r *registry) setNetwork(nw Network) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nw = nw
}

// setServer registers what this process serves.
func (r *registry) setServer(s *regServer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.server = s
}

// setDHT makes f the node whose health this process reports.
func (r *registry) setDHT(f func(context.Context) (dht.Stats, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dht = dhtStatsFunc(f)
}

type dhtStatsFunc func(context.Context) (dht.Stats, error)

func (f dhtStatsFunc) DHTStats(ctx context.Context) (dht.Stats, error) { return f(ctx) }

// add registers t until the returned func is called.
func (r *registry) add(t *regTunnel) (remove func()) {
	r.mu.Lock()
	r.tunnels = append(r.tunnels, t)
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, x := range r.tunnels {
			if x == t {
				r.tunnels = append(r.tunnels[:i:i], r.tunnels[i+1:]...)
				return
			}
		}
	}
}

// ProcessStatus is one process's answer on its control socket, and an
// element of `keytunnel status --json`'s processes.
type ProcessStatus struct {
	PID     int            `json:"pid"`
	Command string         `json:"command"`
	Started time.Time      `json:"started"`
	Tunnels []TunnelStatus `json:"tunnels"`
	Server  *ServerStatus  `json:"server,omitempty"`
	DHT     *DHTStatus     `json:"dht,omitempty"`
}

// ServerStatus is what a relay, dht-relay or testnet process serves, with
// its counters: a blind relay's sessions and pairings, a dht-relay's
// clients, a testnet's nodes.
type ServerStatus struct {
	Role      string            `json:"role"`
	PublicKey string            `json:"public_key,omitempty"`
	Listen    string            `json:"listen,omitempty"`
	Since     time.Time         `json:"since"`
	Counters  map[string]uint64 `json:"counters"`
}

// TunnelStatus is one tunnel of a process.
type TunnelStatus struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	PublicKey string    `json:"public_key,omitempty"` // expose: the key served
	Remote    string    `json:"remote,omitempty"`     // forward, connect: the key dialed
	Service   string    `json:"service,omitempty"`    // forward, connect: a named service behind Remote
	Target    string    `json:"target,omitempty"`     // expose
	Listen    string    `json:"listen,omitempty"`     // forward
	UDP       bool      `json:"udp,omitempty"`        // a UDP service; connections are its flows
	Since     time.Time `json:"since"`
	// Payload bytes through the tunnel: sent to peers, received from them.
	BytesSent        uint64       `json:"bytes_sent"`
	BytesReceived    uint64       `json:"bytes_received"`
	ConnectionsOpen  int64        `json:"connections_open"`
	ConnectionsTotal uint64       `json:"connections_total"`
	Redials          uint64       `json:"redials"`
	Peers            []PeerStatus `json:"peers"`
}

// PeerStatus is one live peer connection of a tunnel.
type PeerStatus struct {
	PublicKey string    `json:"public_key"`
	Mode      string    `json:"mode"`           // mux or raw
	Path      string    `json:"path,omitempty"` // "direct ADDR", "relay KEY (ADDR)", "dht-relay URL"
	RTTMillis float64   `json:"rtt_ms,omitempty"`
	Since     time.Time `json:"since"`
}

// DHTStatus is the health of the process's DHT node.
type DHTStatus struct {
	RoutingNodes       int               `json:"routing_nodes"`
	Firewalled         bool              `json:"firewalled"`
	Requests           uint64            `json:"requests"`
	Responses          uint64            `json:"responses"`
	Timeouts           uint64            `json:"timeouts"`
	Handshakes         map[string]uint64 `json:"handshakes"`
	Dials              uint64            `json:"dials"`
	DialFailures       uint64            `json:"dial_failures"`
	HolepunchAttempts  uint64            `json:"holepunch_attempts"`
	HolepunchSuccesses uint64            `json:"holepunch_successes"`
	RelayFallbacks     uint64            `json:"relay_fallbacks"`
	RelayUpgrades      uint64            `json:"relay_upgrades"`

	stats dht.Stats
}

// dhtStatser is a Network that runs a DHT node of its own (not a
// dht-relay client, whose node is the relay's).
type dhtStatser interface {
	DHTStats(ctx context.Context) (dht.Stats, error)
}

// snapshot reads every counter now.
func (r *registry) snapshot(ctx context.Context) ProcessStatus {
	r.mu.Lock()
	ps := ProcessStatus{PID: os.Getpid(), Command: r.command, Started: r.started, Tunnels: []TunnelStatus{}}
	tunnels := append([]*regTunnel(nil), r.tunnels...)
	nw := r.nw
	d, srv := r.dht, r.server
	r.mu.Unlock()
	if srv != nil {
		ps.Server = &ServerStatus{Role: srv.role, PublicKey: srv.publicKey, Listen: srv.listen, Since: srv.since,
			Counters: map[string]uint64{}}
		for _, c := range srv.counters() {
			ps.Server.Counters[c.name] = c.value
		}
	}
	if d == nil {
		d, _ = nw.(dhtStatser)
	}
	for _, t := range tunnels {
		ts := TunnelStatus{Name: t.name, Role: t.role, PublicKey: t.publicKey, Remote: t.remote, Service: t.service, UDP: t.udp, Peers: []PeerStatus{}}
		if t.role == "expose" {
			ts.Target = t.local
		} else {
			ts.Listen = t.local
		}
		s := t.stats()
		ts.Since, ts.BytesSent, ts.BytesReceived = s.Since, s.BytesSent, s.BytesReceived
		ts.ConnectionsOpen, ts.ConnectionsTotal, ts.Redials = s.ConnsOpen, s.ConnsTotal, s.Redials
		for _, p := range s.Peers {
			ts.Peers = append(ts.Peers, PeerStatus{PublicKey: p.Remote.String(), Mode: p.Mode, Path: p.Path,
				RTTMillis: float64(p.RTT.Microseconds()) / 1000, Since: p.Since})
		}
		ps.Tunnels = append(ps.Tunnels, ts)
	}
	if d != nil {
		if s, err := d.DHTStats(ctx); err == nil {
			ps.DHT = &DHTStatus{
				RoutingNodes: s.RoutingNodes, Firewalled: s.Firewalled,
				Requests: s.RPC.Requests, Responses: s.RPC.Responses, Timeouts: s.RPC.Timeouts,
				Handshakes: s.Handshakes, Dials: s.Dials, DialFailures: s.DialFailures,
				HolepunchAttempts: s.HolepunchAttempts, HolepunchSuccesses: s.HolepunchSuccesses,
				RelayFallbacks: s.RelayFallbacks, RelayUpgrades: s.RelayUpgrades,
				stats: s,
			}
		}
	}
	return ps
}

// DHTStats passes on the node's health when the network runs a node.
func (n appNetwork) DHTStats(ctx context.Context) (dht.Stats, error) {
	if d, ok := n.Network.(dhtStatser); ok {
		return d.DHTStats(ctx)
	}
	return dht.Stats{}, errNoDHT
}
