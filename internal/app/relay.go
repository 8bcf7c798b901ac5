package app

import (
	"context"
	"fmt"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/relay/blindrelay"
)

// RelayOptions configure `keytunnel relay`.
type RelayOptions struct {
	Key  KeyOptions // the relay's identity; none: a new key each run
	Port int        // UDP port of the node (0: any free port)
	// Session admission (blindrelay.ServerOptions); 0: the default.
	MaxSessions          int           // --max-sessions
	MaxSessionsPerSource int           // --max-sessions-per-source
	FirstMessageTimeout  time.Duration // --first-message-timeout
}

// serverOptions checks o's admission settings before anything starts.
func (o RelayOptions) serverOptions() (*blindrelay.ServerOptions, error) {
	if o.MaxSessions < 0 {
		return nil, fmt.Errorf("--max-sessions %d: want a positive number (default %d)", o.MaxSessions, blindrelay.DefaultMaxSessions)
	}
	if o.MaxSessionsPerSource < 0 {
		return nil, fmt.Errorf("--max-sessions-per-source %d: want a positive number (default %d)", o.MaxSessionsPerSource, blindrelay.DefaultMaxSessionsPerSource)
	}
	if o.FirstMessageTimeout < 0 {
		return nil, fmt.Errorf("--first-message-timeout %v: want a positive duration (default %v)", o.FirstMessageTimeout, blindrelay.DefaultFirstMessageTimeout)
	}
	return &blindrelay.ServerOptions{
		MaxSessions: o.MaxSessions, MaxSessionsPerSource: o.MaxSessionsPerSource, FirstMessageTimeout: o.FirstMessageTimeout,
	}, nil
}

// Relay runs a blind-relay server until ctx ends: peers that cannot
// holepunch (both behind randomizing NATs) pair their streams through it
// with `--relay-through <its key>`. It relays encrypted udx packets and
// never sees plaintext. The first stdout line is its public key.
func Relay(ctx context.Context, env *Env, o RelayOptions) error {
	env.init()
	defer env.ignoreHangup("relay")()
	so, err := o.serverOptions()
	if err != nil {
		return err
	}
	kp, err := env.loadKey(o.Key)
	if err != nil {
		return err
	}
	if !o.Key.given() {
		if kp, err = key.Generate(nil); err != nil {
			return err
		}
	}
	stop, err := env.observe("relay")
	if err != nil {
		return err
	}
	defer stop()
	n, err := startNode(ctx, env, o.Port, rpc.Adaptive)
	if err != nil {
		return err
	}
	defer n.Close()
	env.reg.setNetwork(n.Network())
	r, err := n.ServeBlindRelay(ctx, kp, so)
	if err != nil {
		return fmt.Errorf("announcing the relay %s: %w", kp.Public, err)
	}
	defer r.Close()
	env.reg.setServer(&regServer{role: "relay", publicKey: kp.Public.String(), since: time.Now(),
		counters: func() []serverCounter { return blindRelayCounters(r.Stats()) }})
	env.out.emit(kp.Public.String(), Event{Event: EvListening, PublicKey: kp.Public.String(), Target: "blind-relay"})
	env.logger.Info("relaying", "public_key", kp.Public.String())
	<-ctx.Done()
	s := r.Stats()
	env.logger.Info("relay stopped", "matched", s.Matched, "active", s.Active,
		"sessions_refused", s.SessionsRefused, "sessions_silent", s.Silent)
	return nil
}

// ParseRelayKeys parses --relay-through values (hex or z32, each may be
// comma-separated).
func ParseRelayKeys(list []string) ([]key.PublicKey, error) {
	var out []key.PublicKey
	for _, s := range SplitList(list) {
		pk, err := parsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("--relay-through %q: %w", s, err)
		}
		out = append(out, pk)
	}
	return out, nil
}
