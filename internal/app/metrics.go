package app

import (
	"context"
	"errors"
	"fmt"
	"github.com/keytunnel/keytunnel/internal/stack"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keytunnel/keytunnel/dht"
)

// Prometheus metrics (--metrics ADDR). The collector reads the same
// snapshot as `keytunnel status` at each scrape: the counters stay plain
// atomics in tunnel and dht, and only this file knows Prometheus.

var (
	// key is the tunnel's public key: the one an expose serves, the one a
	// forward dials.
	tunnelLabels = []string{"tunnel", "role", "key"}

	mBytesSent = prometheus.NewDesc("keytunnel_tunnel_sent_bytes_total",
		"Payload bytes sent to peers through the tunnel.", tunnelLabels, nil)
	mBytesReceived = prometheus.NewDesc("keytunnel_tunnel_received_bytes_total",
		"Payload bytes received from peers through the tunnel.", tunnelLabels, nil)
	mConnsOpen = prometheus.NewDesc("keytunnel_tunnel_connections_open",
		"Tunnelled connections now open.", tunnelLabels, nil)
	mConnsTotal = prometheus.NewDesc("keytunnel_tunnel_connections_total",
		"Tunnelled connections since the tunnel started.", tunnelLabels, nil)
	mRedials = prometheus.NewDesc("keytunnel_tunnel_redials_total",
		"Dials of a forward after its first: after a failed dial or a lost peer session.", tunnelLabels, nil)
	mPeers = prometheus.NewDesc("keytunnel_tunnel_peers",
		"Peer connections now up (mux sessions and raw connections).", tunnelLabels, nil)
	mStart = prometheus.NewDesc("keytunnel_tunnel_start_time_seconds",
		"When the tunnel started, in seconds since the Unix epoch.", tunnelLabels, nil)
	mPeerRTT = prometheus.NewDesc("keytunnel_peer_rtt_seconds",
		"Smoothed round-trip time of a live peer connection.", []string{"tunnel", "peer", "path"}, nil)

	mNodes = prometheus.NewDesc("keytunnel_dht_routing_table_nodes",
		"Nodes in the DHT routing table.", nil, nil)
	mFirewalled = prometheus.NewDesc("keytunnel_dht_firewalled",
		"1 while the DHT node is not reachable unsolicited (behind a NAT or firewall).", nil, nil)
	mRequests = prometheus.NewDesc("keytunnel_dht_requests_total",
		"DHT requests sent.", nil, nil)
	mResponses = prometheus.NewDesc("keytunnel_dht_responses_total",
		"DHT responses received.", nil, nil)
	mTimeouts = prometheus.NewDesc("keytunnel_dht_timeouts_total",
		"DHT requests that got no answer.", nil, nil)
	mRetries = prometheus.NewDesc("keytunnel_dht_retries_total",
		"DHT requests sent again after a timeout.", nil, nil)
	mDropped = prometheus.NewDesc("keytunnel_dht_dropped_requests_total",
		"Incoming DHT requests dropped over the rate limit.", nil, nil)
	mMalformed = prometheus.NewDesc("keytunnel_dht_malformed_messages_total",
		"Incoming DHT messages that did not decode.", nil, nil)
	mHandshakes = prometheus.NewDesc("keytunnel_dht_handshakes_total",
		"Peer handshakes our listeners answered, by outcome.", []string{"outcome"}, nil)
	mDials = prometheus.NewDesc("keytunnel_dht_dials_total",
		"Outgoing peer connections attempted (blind-relay connections included).", nil, nil)
	mDialFailures = prometheus.NewDesc("keytunnel_dht_dial_failures_total",
		"Outgoing peer connections that failed.", nil, nil)
	mPunchAttempts = prometheus.NewDesc("keytunnel_dht_holepunch_attempts_total",
		"Holepunches started, either side.", nil, nil)
	mPunchSuccesses = prometheus.NewDesc("keytunnel_dht_holepunch_successes_total",
		"Holepunches that found a direct path.", nil, nil)
	mRelayFallbacks = prometheus.NewDesc("keytunnel_dht_relay_fallbacks_total",
		"Connections that went through a blind relay.", nil, nil)
	mRelayUpgrades = prometheus.NewDesc("keytunnel_dht_relay_upgrades_total",
		"Relayed connections that moved to a direct path.", nil, nil)
)

// serverMetrics are the counters of relay, dht-relay and testnet
// processes (ServerStatus.Counters), by role and counter name.
var serverMetrics = map[string]map[string]serverMetric{
	"relay": {
		"sessions":              {plainDesc("keytunnel_blind_relay_sessions", "Blind-relay sessions (peer connections) open now."), true},
		"pending_pairs":         {plainDesc("keytunnel_blind_relay_pending_pairs", "Pairings waiting for their second half now."), true},
		"active_pairs":          {plainDesc("keytunnel_blind_relay_active_pairs", "Pairs being relayed now."), true},
		"pair_requests":         {plainDesc("keytunnel_blind_relay_pair_requests_total", "Pair requests that took a slot."), false},
		"pairs_matched":         {plainDesc("keytunnel_blind_relay_pairs_matched_total", "Pairings that got both halves and their streams."), false},
		"pairs_cancelled":       {plainDesc("keytunnel_blind_relay_pairs_cancelled_total", "Pairings ended by unpair or by their session closing."), false},
		"pairs_expired":         {plainDesc("keytunnel_blind_relay_pairs_expired_total", "Pending pairings dropped after waiting too long for their second half."), false},
		"pairs_idle":            {plainDesc("keytunnel_blind_relay_pairs_idle_total", "Pairs torn down after going idle."), false},
		"pair_requests_refused": {plainDesc("keytunnel_blind_relay_pair_requests_refused_total", "Pair requests refused (limits, bad id)."), false},
		"pair_requests_ignored": {plainDesc("keytunnel_blind_relay_pair_requests_ignored_total", "Pair requests for a slot already taken."), false},
		"sessions_refused":      {plainDesc("keytunnel_blind_relay_sessions_refused_total", "Sessions refused at once (--max-sessions, --max-sessions-per-source)."), false},
		"sessions_silent":       {plainDesc("keytunnel_blind_relay_sessions_silent_total", "Sessions closed for sending no pair request within --first-message-timeout."), false},
	},
	"dht-relay": {
		"clients": {plainDesc("keytunnel_dht_relay_clients", "dht-relay clients connected now."), true},
	},
	"testnet": {
		"nodes": {plainDesc("keytunnel_testnet_nodes", "DHT nodes the testnet runs."), true},
	},
}

type serverMetric struct {
	desc  *prometheus.Desc
	gauge bool
}

func plainDesc(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }

// collector turns a registry snapshot into metrics at each scrape.
type collector struct{ reg *registry }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mBytesSent, mBytesReceived, mConnsOpen, mConnsTotal, mRedials, mPeers, mStart, mPeerRTT,
		mNodes, mFirewalled, mRequests, mResponses, mTimeouts, mRetries, mDropped, mMalformed, mHandshakes,
		mDials, mDialFailures, mPunchAttempts, mPunchSuccesses, mRelayFallbacks, mRelayUpgrades} {
		ch <- d
	}
	for _, role := range serverMetrics {
		for _, m := range role {
			ch <- m.desc
		}
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ps := c.reg.snapshot(ctx)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	seen := map[string]bool{}
	for _, t := range ps.Tunnels {
		// Two tunnels of one name would make the scrape fail; an up file
		// has unique names, and a lone command has one tunnel.
		id := t.Name + "\x00" + t.Role
		if seen[id] {
			continue
		}
		seen[id] = true
		k := t.PublicKey
		if k == "" {
			k = t.Remote
		}
		l := []string{t.Name, t.Role, k}
		counter(mBytesSent, t.BytesSent, l...)
		counter(mBytesReceived, t.BytesReceived, l...)
		gauge(mConnsOpen, float64(t.ConnectionsOpen), l...)
		counter(mConnsTotal, t.ConnectionsTotal, l...)
		counter(mRedials, t.Redials, l...)
		gauge(mPeers, float64(len(t.Peers)), l...)
		gauge(mStart, float64(t.Since.UnixNano())/1e9, l...)
		peerSeen := map[string]bool{}
		for _, p := range t.Peers {
			if p.RTTMillis <= 0 || peerSeen[p.PublicKey+p.Path] {
				continue
			}
			peerSeen[p.PublicKey+p.Path] = true
			gauge(mPeerRTT, p.RTTMillis/1000, t.Name, p.PublicKey, p.Path)
		}
	}
	if srv := ps.Server; srv != nil {
		for name, v := range srv.Counters {
			m, ok := serverMetrics[srv.Role][name]
			switch {
			case !ok:
				// TestServerCountersHaveMetrics keeps this from happening.
			case m.gauge:
				gauge(m.desc, float64(v))
			default:
				counter(m.desc, v)
			}
		}
	}
	if ps.DHT == nil {
		return
	}
	s := ps.DHT.stats
	gauge(mNodes, float64(s.RoutingNodes))
	firewalled := 0.0
	if s.Firewalled {
		firewalled = 1
	}
	gauge(mFirewalled, firewalled)
	counter(mRequests, s.RPC.Requests)
	counter(mResponses, s.RPC.Responses)
	counter(mTimeouts, s.RPC.Timeouts)
	counter(mRetries, s.RPC.Retries)
	counter(mDropped, s.RPC.Dropped)
	counter(mMalformed, s.RPC.Malformed)
	for _, o := range dht.HandshakeOutcomes() {
		counter(mHandshakes, s.Handshakes[o], o)
	}
	counter(mDials, s.Dials)
	counter(mDialFailures, s.DialFailures)
	counter(mPunchAttempts, s.HolepunchAttempts)
	counter(mPunchSuccesses, s.HolepunchSuccesses)
	counter(mRelayFallbacks, s.RelayFallbacks)
	counter(mRelayUpgrades, s.RelayUpgrades)
}

// metricsServer serves /metrics on the address the user gave.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
	once sync.Once
}

// startMetrics binds addr (HOST:PORT; a bare PORT means 127.0.0.1, as
// everywhere in keytunnel, so that metrics are never public unless the
// user names an address) and serves Prometheus metrics there: the
// process's tunnels and DHT node, and the Go and process collectors.
func (e *Env) startMetrics(addr string) (*metricsServer, error) {
	hp, err := stack.HostPort("--metrics", addr, true)
	if err != nil {
		return nil, err
	}
	ln, err := stack.ListenTCP(hp)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		collector{&e.reg},
	)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{e}}))
	m := &metricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.logger.Error("metrics server failed", "err", err)
		}
	}()
	url := "http://" + ln.Addr().String() + "/metrics"
	// On stderr only: stdout's first line stays the command's result
	// (expose's key), which scripts read.
	e.logger.Info("serving Prometheus metrics", "url", url)
	return m, nil
}

func (m *metricsServer) close() {
	m.once.Do(func() { m.srv.Close() })
	<-m.done
}

// slogPrinter gives promhttp's error log to the process's logger.
type slogPrinter struct{ e *Env }

func (p slogPrinter) Println(v ...any) { p.e.logger.Warn("metrics: " + fmt.Sprint(v...)) }
