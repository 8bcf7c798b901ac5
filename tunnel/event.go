package tunnel

import (
	"encoding/json"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// EventKind names what happened. The values are stable strings so that a
// --json mode can print them as they are.
type EventKind string

const (
	// EventConnected: a peer session is up (Forward, Pipe) or a peer was
	// accepted (Expose).
	EventConnected EventKind = "connected"
	// EventDisconnected: a peer session or raw peer connection ended.
	EventDisconnected EventKind = "disconnected"
	// EventRefused: Expose turned a peer away, or Forward was turned away.
	EventRefused EventKind = "refused"
	// EventRedialing: Forward will dial again after Delay.
	EventRedialing EventKind = "redialing"
)

// Event is a notable change of a tunnel's state, for machine-readable
// output. Fields that do not apply to a kind are zero.
type Event struct {
	Kind    EventKind
	Time    time.Time
	Remote  key.PublicKey
	Mode    string        // "mux" or "raw"
	Service string        // refused: the named service a stream asked for
	Attempt int           // redialing: failed attempts so far
	Delay   time.Duration // redialing: backoff; connections before it fail without a dial
	Err     error
}

// MarshalJSON writes the event with the key in hex, the delay in
// milliseconds and the error as its message, which is what a log consumer
// can use.
func (e Event) MarshalJSON() ([]byte, error) {
	type out struct {
		Kind    EventKind `json:"event"`
		Time    time.Time `json:"time"`
		Remote  string    `json:"remote,omitempty"`
		Mode    string    `json:"mode,omitempty"`
		Service string    `json:"service,omitempty"`
		Attempt int       `json:"attempt,omitempty"`
		DelayMS int64     `json:"delay_ms,omitempty"`
		Err     string    `json:"error,omitempty"`
	}
	o := out{Kind: e.Kind, Time: e.Time, Mode: e.Mode, Service: e.Service, Attempt: e.Attempt, DelayMS: e.Delay.Milliseconds()}
	if !e.Remote.IsZero() {
		o.Remote = e.Remote.String()
	}
	if e.Err != nil {
		o.Err = e.Err.Error()
	}
	return json.Marshal(o)
}

type emitter func(Event)

func (f emitter) emit(e Event) {
	if f == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	f(e)
}
