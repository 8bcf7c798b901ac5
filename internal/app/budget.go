package app

import (
	"fmt"

	"github.com/keytunnel/keytunnel/tunnel"
)

// BudgetOptions are expose's caps on what peers may take (the --max-*
// flags, or an [[expose]] entry's max_* fields); 0 means the default.
type BudgetOptions struct {
	Sessions          int
	StreamsPerSession int
	Streams           int
	MemoryMiB         int
}

// DefaultBudget is what 0 stands for, for the flags' usage lines.
var DefaultBudget = BudgetOptions{
	Sessions:          tunnel.DefaultSessions,
	StreamsPerSession: tunnel.DefaultStreamsPerSession,
	Streams:           tunnel.DefaultStreams,
	MemoryMiB:         tunnel.DefaultMemory >> 20,
}

// budget converts and checks o.
func (o BudgetOptions) budget() (tunnel.Budget, error) {
	if o.MemoryMiB < 0 || o.MemoryMiB > 1<<20 {
		return tunnel.Budget{}, fmt.Errorf("--max-buffer-mib %d: want 1 to %d MiB (0 for the default, %d)", o.MemoryMiB, 1<<20, DefaultBudget.MemoryMiB)
	}
	b := tunnel.Budget{Sessions: o.Sessions, StreamsPerSession: o.StreamsPerSession, Streams: o.Streams, Memory: int64(o.MemoryMiB) << 20}
	if err := b.Validate(); err != nil {
		return tunnel.Budget{}, fmt.Errorf("--max-sessions, --max-streams-per-session, --max-streams: %w", err)
	}
	return b, nil
}
