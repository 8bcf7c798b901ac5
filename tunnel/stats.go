package tunnel

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Stats is a snapshot of one tunnel's counters (Exposer.Stats,
// Forwarder.Stats), for `keytunnel status` and metrics. Bytes are the
// tunnelled connections' payload, counted as join copies it, so they equal
// what the local applications wrote and read; the encryption and
// framing around it are not counted.
type Stats struct {
	Since         time.Time // when the tunnel started
	BytesSent     uint64    // to peers: read from local connections (forward) or the target (expose)
	BytesReceived uint64    // from peers
	ConnsOpen     int64     // tunnelled connections now open
	ConnsTotal    uint64    // tunnelled connections since Since
	// Redials counts dials of a Forwarder after its first: after a failed
	// dial or a lost session.
	Redials uint64
	Peers   []PeerStats // peer connections now up, oldest first
}

// PeerStats describes one live peer connection: a mux session, or a raw
// client's connection.
type PeerStats struct {
	Remote key.PublicKey
	Mode   string // "mux" or "raw"
	Since  time.Time
	// RTT is the transport's smoothed round-trip time, when the PeerConn
	// measures one (a secret stream over udx does); 0 if unknown.
	RTT time.Duration
	// Path says how the connection reaches the peer, when the PeerConn
	// knows (a Path() string method): a direct address, or the relay it
	// goes through. Empty if unknown.
	Path string
}

// counters are a tunnel's live counters. The byte counters are bumped
// once per copied buffer (at most 32 KiB), so counting costs an atomic
// add per write.
type counters struct {
	since          time.Time
	sent, received atomic.Uint64
	open           atomic.Int64
	total          atomic.Uint64
	redials        atomic.Uint64

	mu    sync.Mutex
	peers map[*livePeer]struct{}
}

type livePeer struct {
	pc    PeerConn
	mode  string
	since time.Time
}

func newCounters() *counters {
	return &counters{since: time.Now(), peers: map[*livePeer]struct{}{}}
}

// addPeer records pc as up until the returned func is called.
func (c *counters) addPeer(pc PeerConn, mode string) (remove func()) {
	p := &livePeer{pc: pc, mode: mode, since: time.Now()}
	c.mu.Lock()
	c.peers[p] = struct{}{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.peers, p)
		c.mu.Unlock()
	}
}

// connOpened counts a tunnelled connection; the returned func counts its
// end.
func (c *counters) connOpened() (closed func()) {
	c.total.Add(1)
	c.open.Add(1)
	return func() { c.open.Add(-1) }
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Since:         c.since,
		BytesSent:     c.sent.Load(),
		BytesReceived: c.received.Load(),
		ConnsOpen:     c.open.Load(),
		ConnsTotal:    c.total.Load(),
		Redials:       c.redials.Load(),
	}
	c.mu.Lock()
	for p := range c.peers {
		ps := PeerStats{Remote: p.pc.RemotePublicKey(), Mode: p.mode, Since: p.since, RTT: rttOf(p.pc)}
		if r, ok := p.pc.(interface{ Path() string }); ok {
			ps.Path = r.Path()
		}
		s.Peers = append(s.Peers, ps)
	}
	c.mu.Unlock()
	sort.Slice(s.Peers, func(i, j int) bool { return s.Peers[i].Since.Before(s.Peers[j].Since) })
	return s
}
