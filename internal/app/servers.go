package app

import (
	"github.com/keytunnel/keytunnel/relay/blindrelay"
)

// The counters relay, dht-relay and testnet processes report in status
// (ServerStatus.Counters) and as metrics (serverMetrics names each).

func blindRelayCounters(s blindrelay.Stats) []serverCounter {
	return []serverCounter{
		{"sessions", uint64(s.Sessions)},
		{"pending_pairs", uint64(s.Pending)},
		{"active_pairs", uint64(s.Active)},
		{"pair_requests", s.Requested},
		{"pairs_matched", s.Matched},
		{"pairs_cancelled", s.Cancelled},
		{"pairs_expired", s.Expired},
		{"pairs_idle", s.Idle},
		{"pair_requests_refused", s.Refused},
		{"pair_requests_ignored", s.Ignored},
		{"sessions_refused", s.SessionsRefused},
		{"sessions_silent", s.Silent},
	}
}

func dhtRelayCounters(clients int) []serverCounter {
	return []serverCounter{{"clients", uint64(clients)}}
}

func testnetCounters(nodes int) []serverCounter {
	return []serverCounter{{"nodes", uint64(nodes)}}
}
