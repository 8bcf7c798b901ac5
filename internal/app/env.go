package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/keytunnel/keytunnel/internal/key"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/tunnel"
)

// Env is what every command gets from the global options and the process.
// The zero value of each field has a sensible meaning; tests set the hooks.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	// Bootstrap is the DHT bootstrap list (host:port). Nil means the
	// public HyperDHT nodes; `up` uses its file's list when this is nil.
	Bootstrap []string
	// Level is the log level; LevelSet says whether the user chose it
	// (then a configuration file's log_level does not override it).
	Level    slog.Level
	LevelSet bool
	// JSON selects JSON lines for events (stdout) and logs (stderr).
	JSON bool

	// RelayThrough lists blind-relay servers (`keytunnel relay` or a Node
	// blind-relay) that connections fall back to when holepunching cannot
	// work; one is picked per connection. Empty: no relay.
	RelayThrough []key.PublicKey

	// Host is the address DHT sockets bind; empty means all interfaces
	// (dht.ListenUDP). Tests bind 127.0.0.1.
	Host string
	// KeyDir is where expose keeps the keys it creates; empty means
	// <user config dir>/keytunnel/keys.
	KeyDir string
	// OpenNetwork starts the network commands run on; nil means a DHT
	// node (see OpenDHT).
	OpenNetwork func(ctx context.Context, env *Env) (Network, error)
	// JoinTimeout bounds joining the DHT; zero means 30 s.
	JoinTimeout time.Duration
	// Reload delivers reload requests to `up`; nil means SIGHUP.
	Reload <-chan struct{}
	// SSH is the ssh program; empty means "ssh" from $PATH. Self is the
	// keytunnel executable ProxyCommand runs; empty means os.Executable.
	SSH  string
	Self string

	// Metrics is the address --metrics serves Prometheus metrics on
	// (HOST:PORT, or PORT on 127.0.0.1); empty: none.
	Metrics string
	// RunDir is where control sockets live; empty means
	// $XDG_RUNTIME_DIR/keytunnel, else <user config dir>/keytunnel/run.
	RunDir string

	reg        registry // what this process runs, for status and metrics
	once       sync.Once
	notifyOnce sync.Once
	out        *output
	errw       *lockedWriter
	logger     *slog.Logger
	level      slog.LevelVar
}

func (e *Env) init() {
	e.once.Do(func() {
		if e.Stdin == nil {
			e.Stdin = os.Stdin
		}
		if e.Stdout == nil {
			e.Stdout = os.Stdout
		}
		if e.Stderr == nil {
			e.Stderr = os.Stderr
		}
		e.level.Set(e.Level)
		e.out = &output{w: e.Stdout, json: e.JSON}
		opts := &slog.HandlerOptions{Level: &e.level}
		e.errw = &lockedWriter{w: e.Stderr}
		if e.JSON {
			e.logger = slog.New(slog.NewJSONHandler(e.errw, opts))
		} else {
			e.logger = slog.New(slog.NewTextHandler(e.errw, opts))
		}
	})
}

// observe makes this process visible to `keytunnel status` (its control
// socket) and, with --metrics, to Prometheus. Commands call it once their
// arguments are checked, before they start anything, so that a metrics
// address in use fails the command before it runs.
func (e *Env) observe(command string) (stop func(), err error) {
	e.init()
	e.reg.setCommand(command)
	var m *metricsServer
	if e.Metrics != "" {
		if m, err = e.startMetrics(e.Metrics); err != nil {
			return nil, err
		}
	}
	stopControl := e.startControl(command == "connect")
	return func() {
		stopControl()
		if m != nil {
			m.close()
		}
	}, nil
}

// Logger is the logger every command logs to: stderr, text or JSON.
func (e *Env) Logger() *slog.Logger {
	e.init()
	return e.logger
}

// setLevel changes the log level (up applies its file's log_level).
func (e *Env) setLevel(l slog.Level) {
	e.init()
	e.level.Set(l)
}

func (e *Env) joinTimeout() time.Duration {
	if e.JoinTimeout > 0 {
		return e.JoinTimeout
	}
	return 30 * time.Second
}

// Event is one line of --json output. Event names the kind; the tunnel's
// events (connected, disconnected, refused, redialing) have the fields of
// tunnel.Event plus Entry.
type Event struct {
	Event     string    `json:"event"`
	Time      time.Time `json:"time"`
	Entry     string    `json:"entry,omitempty"` // up: the entry's name
	PublicKey string    `json:"public_key,omitempty"`
	// PublicKeyZ32 is PublicKey in z-base-32, the form Pear and
	// holesail print (keygen, key show, listening).
	PublicKeyZ32 string `json:"public_key_z32,omitempty"`
	Remote       string `json:"remote,omitempty"`
	Service      string `json:"service,omitempty"` // forward: the named service behind Remote
	Target       string `json:"target,omitempty"`
	UDP          bool   `json:"udp,omitempty"` // expose, forward: a UDP service
	Listen       string `json:"listen,omitempty"`
	KeyFile      string `json:"key_file,omitempty"`
	Created      bool   `json:"key_created,omitempty"`
	Bootstrap    string `json:"bootstrap,omitempty"`
	Address      string `json:"address,omitempty"`
	Nodes        int    `json:"nodes,omitempty"`
	Error        string `json:"error,omitempty"`
	Seed         string `json:"seed,omitempty"` // keygen without --out
	// Connection is the holesail connection string (listening, with
	// --holesail or --private; a private one carries the secret).
	Connection string `json:"connection,omitempty"`
	Private    bool   `json:"private,omitempty"`
	// doctor: the check, whether it passed, its line.
	Check   string `json:"check,omitempty"`
	OK      *bool  `json:"ok,omitempty"`
	Message string `json:"message,omitempty"`
	// reloaded: the entries by name.
	Started []string `json:"started,omitempty"`
	Stopped []string `json:"stopped,omitempty"`
	Kept    []string `json:"kept,omitempty"`
	Failed  []string `json:"failed,omitempty"`
	// listening: an expose's services, when it has named ones.
	Services []ServiceInfo `json:"services,omitempty"`
}

// Event kinds of this package (the tunnel adds its own).
const (
	EvListening  = "listening"  // expose: peers can reach the key
	EvForwarding = "forwarding" // forward: the local port is open
	EvStopped    = "stopped"    // up: an entry stopped (removed on reload)
	EvReloaded   = "reloaded"   // up: a reload was applied
	EvReloadErr  = "reload_failed"
	EvTestnet    = "testnet" // testnet: the network is up
	EvNode       = "node"    // node: the node has joined
	EvKey        = "key"     // keygen: a key pair was made
)

// output serializes stdout lines: text lines, or JSON objects in JSON mode.
type output struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
}

// emit prints ev as JSON in JSON mode, else text (if not empty).
func (o *output) emit(text string, ev Event) {
	if !o.json {
		if text != "" {
			o.write([]byte(text + "\n"))
		}
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	o.write(append(b, '\n'))
}

// text prints a line in text mode only (JSON mode has it in an event).
func (o *output) text(s string) {
	if !o.json {
		o.write([]byte(s + "\n"))
	}
}

// tunnelEvent prints a tunnel event in JSON mode, with the entry's name
// spliced in. Text mode prints nothing: the tunnel logs the same facts.
func (o *output) tunnelEvent(entry string, ev tunnel.Event) {
	if !o.json {
		return
	}
	b, err := json.Marshal(ev)
	if err != nil || len(b) < 2 || b[len(b)-1] != '}' {
		return
	}
	if entry != "" {
		name, _ := json.Marshal(entry)
		b = append(append(append(b[:len(b)-1:len(b)-1], `,"entry":`...), name...), '}')
	}
	o.write(append(b, '\n'))
}

func (o *output) write(b []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.w.Write(b)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// onEvent returns a tunnel OnEvent callback for entry.
func (e *Env) onEvent(entry string) func(tunnel.Event) {
	return func(ev tunnel.Event) { e.out.tunnelEvent(entry, ev) }
}

// ExitCode is the process's exit status for a command's error: 0 for
// nil, an ExitError's code, else 1.
func ExitCode(err error) int {
	var ee ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	}
	return 1
}

// Fail prints err (see PrintError) unless it is an ExitError, and returns
// the exit status.
func (e *Env) Fail(err error) int {
	var ee ExitError
	if err != nil && !errors.As(err, &ee) {
		e.PrintError(err)
	}
	return ExitCode(err)
}

// PrintError writes err as the command's failure: one line per problem on
// stderr ("keytunnel: ..."), and an error event on stdout in JSON mode.
func (e *Env) PrintError(err error) {
	e.init()
	msg := err.Error()
	var b bytes.Buffer
	for _, l := range bytes.Split([]byte(msg), []byte("\n")) {
		fmt.Fprintf(&b, "keytunnel: %s\n", l)
	}
	e.errw.Write(b.Bytes())
	if e.JSON {
		e.out.emit("", Event{Event: "error", Error: msg})
	}
}
