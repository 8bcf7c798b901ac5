package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/keytunnel/keytunnel/internal/holesail"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/tunnel"
)

// File is a parsed, validated configuration.
type File struct {
	Path      string
	Bootstrap []string // host:port; empty means the public HyperDHT nodes
	// RelayThrough lists blind-relay servers every entry falls back to
	// when holepunching fails (top-level relay_through).
	RelayThrough []key.PublicKey
	LogLevel     slog.Level
	Expose       []Expose
	Forward      []Forward
}

// Expose publishes a local TCP service under a key pair.
type Expose struct {
	Name string
	// Target is host:port (or unix:PATH) of the local service, the
	// default one; empty when Services holds the default (first).
	Target string
	// Services are the entry's named services ([expose.services.NAME]):
	// the one with default = true first, then the others by name. Each
	// one's Allow holds the entry's allow list and its own.
	Services []tunnel.Service
	KeyFile  string // absolute path of the seed file
	KeyPair  key.KeyPair
	Allow    []key.PublicKey // empty: anyone who knows the key
	Raw      bool
	Relay    Relay
	// Private: KeyPair comes from the private connection string in
	// KeyFile (secret_file), and Allow holds its public key, so that only
	// clients holding the string get in (holesail's secure mode).
	Private bool
	// Holesail publishes holesail-server's DHT record for the entry.
	Holesail bool
	// Replace: announce even when another live process serves the key
	// (expose --replace); otherwise the entry does not start then.
	Replace bool
	// Budget caps what peers may take (max_sessions,
	// max_streams_per_session, max_streams, max_buffer_mib); zero fields
	// mean the defaults.
	Budget tunnel.Budget
	// UDP: the target is a UDP service (udp = true), and Flows its flow
	// settings (udp_idle_timeout, max_flows; zero fields: defaults).
	UDP   bool
	Flows tunnel.FlowOptions
}

// Relay is an entry's own relay_through. When the entry has the field
// (Set), its Keys replace the top-level list, and an empty list means no
// relay for this entry; otherwise the top-level list (or the
// --relay-through flag) applies.
type Relay struct {
	Set  bool
	Keys []key.PublicKey
}

// Override is what the entry asks for: nil to inherit, else its own
// list (empty, not nil, for none).
func (r Relay) Override() []key.PublicKey {
	if !r.Set {
		return nil
	}
	return append([]key.PublicKey{}, r.Keys...)
}

func (r Relay) equal(o Relay) bool { return r.Set == o.Set && slices.Equal(r.Keys, o.Keys) }

// Forward opens a local port that reaches the service behind a public key.
type Forward struct {
	Name string
	Key  key.PublicKey
	// Service names one of several services behind Key (service = "web");
	// empty is its default.
	Service string
	Listen  string // host:port
	Raw     bool
	Relay   Relay
	// UDP: the local side is a UDP socket and the service a UDP one.
	UDP   bool
	Flows tunnel.FlowOptions
	// KeyPair, for a private service (secret_file), is the key pair of
	// its private connection string, which the forward dials with; zero
	// otherwise.
	KeyPair key.KeyPair
}

// The raw TOML shapes. Every field is a pointer or a slice so that Parse can
// tell "absent" from "zero".
type rawFile struct {
	Bootstrap    []string     `toml:"bootstrap"`
	RelayThrough []string     `toml:"relay_through"`
	LogLevel     *string      `toml:"log_level"`
	Expose       []rawExpose  `toml:"expose"`
	Forward      []rawForward `toml:"forward"`
}

type rawExpose struct {
	Services map[string]rawService `toml:"services"`

	Name    *string  `toml:"name"`
	Port    *int64   `toml:"port"`
	Address *string  `toml:"address"`
	Key     *string  `toml:"key"`
	Allow   []string `toml:"allow"`
	Raw     *bool    `toml:"raw"`
	Relay   []string `toml:"relay_through"`
	Secret  *string  `toml:"secret_file"`
	HS      *bool    `toml:"holesail"`
	Replace *bool    `toml:"replace"`

	MaxSessions          *int64 `toml:"max_sessions"`
	MaxStreamsPerSession *int64 `toml:"max_streams_per_session"`
	MaxStreams           *int64 `toml:"max_streams"`
	MaxBufferMiB         *int64 `toml:"max_buffer_mib"`

	rawUDP
}

// rawService is one [expose.services.NAME] table.
type rawService struct {
	Port    *int64   `toml:"port"`
	Address *string  `toml:"address"`
	Allow   []string `toml:"allow"`
	UDP     *bool    `toml:"udp"`
	Default *bool    `toml:"default"`
}

// rawUDP are the UDP fields of both entry kinds.
type rawUDP struct {
	UDP         *bool   `toml:"udp"`
	IdleTimeout *string `toml:"udp_idle_timeout"`
	MaxFlows    *int64  `toml:"max_flows"`
}

type rawForward struct {
	Name    *string  `toml:"name"`
	Key     *string  `toml:"key"`
	Service *string  `toml:"service"`
	Listen  *string  `toml:"listen"`
	Port    *int64   `toml:"port"`
	Raw     *bool    `toml:"raw"`
	Relay   []string `toml:"relay_through"`
	Secret  *string  `toml:"secret_file"`

	rawUDP
}

// Load reads and parses the file at path. Relative key paths are taken
// relative to the file's directory.
func Load(path string) (*File, error) { return Options{}.Load(path) }

// Parse parses data read from the file called name. It returns either a
// complete File or an Errors listing every problem.
func Parse(name string, data []byte) (*File, error) { return Options{}.Parse(name, data) }

// Options change where Load and Parse look for what a file names.
type Options struct {
	// KeyDir is the directory relative key paths are taken from; empty
	// means the file's own. A service keeps its keys apart from its
	// configuration this way (systemd's StateDirectory, see
	// examples/systemd).
	KeyDir string
}

// Load is Load with these options.
func (o Options) Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return o.Parse(path, data)
}

// Parse is Parse with these options.
func (o Options) Parse(name string, data []byte) (*File, error) {
	p := &parser{name: name, dir: filepath.Dir(name), keyDir: o.KeyDir, lines: scanLines(data)}
	if p.keyDir == "" {
		p.keyDir = p.dir
	}
	var raw rawFile
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Errors{{File: name, Line: pe.Position.Line, Msg: pe.Message}}
		}
		return nil, Errors{{File: name, Msg: err.Error()}}
	}
	for _, k := range md.Undecoded() {
		p.failKey(k, "unknown field")
	}
	f := &File{Path: name, LogLevel: slog.LevelInfo}
	for i, b := range raw.Bootstrap {
		if _, _, err := splitHostPort(b); err != nil {
			p.fail(p.lines.top("bootstrap"), fmt.Sprintf("bootstrap[%d]", i), err.Error())
			continue
		}
		f.Bootstrap = append(f.Bootstrap, b)
	}
	f.RelayThrough = p.relayKeys(p.lines.top("relay_through"), "relay_through", raw.RelayThrough)
	if raw.LogLevel != nil {
		if err := f.LogLevel.UnmarshalText([]byte(*raw.LogLevel)); err != nil {
			p.fail(p.lines.top("log_level"), "log_level", fmt.Sprintf("%q is not one of debug, info, warn, error", *raw.LogLevel))
		}
	}
	names := map[string]string{}
	for i, r := range raw.Expose {
		e := p.expose(i, r)
		e.Name = p.unique(names, e.Name, r.Name != nil, "expose", i)
		f.Expose = append(f.Expose, e)
	}
	listens := map[string]string{}
	for i, r := range raw.Forward {
		fw := p.forward(i, r)
		fw.Name = p.unique(names, fw.Name, r.Name != nil, "forward", i)
		field := fmt.Sprintf("forward[%d]", i)
		// A UDP and a TCP forward may share a port number.
		lk := fw.Listen
		if fw.UDP {
			lk = "udp " + lk
		}
		if other, dup := listens[lk]; dup && fw.Listen != "" {
			p.fail(p.lines.entryField("forward", i, "listen", "port"), field+".listen",
				fmt.Sprintf("%s is already the listen address of %s", fw.Listen, other))
		}
		listens[lk] = field
		f.Forward = append(f.Forward, fw)
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		return nil, p.errs
	}
	return f, nil
}

type parser struct {
	name   string
	dir    string // the file's directory: relative unix: paths
	keyDir string // relative key paths
	lines  lineIndex
	errs   Errors
}

func (p *parser) fail(line int, field, msg string) {
	p.errs = append(p.errs, &FieldError{File: p.name, Line: line, Field: field, Msg: msg})
}

func (p *parser) failKey(k toml.Key, msg string) {
	// Keys inside [[expose]]/[[forward]] come without an index; the scan
	// finds the first entry that has the key.
	line := 0
	if len(k) >= 2 {
		line = p.lines.anyEntryField(k[0], strings.Join(k[1:], "."))
	} else if len(k) == 1 {
		line = p.lines.top(k[0])
	}
	p.fail(line, k.String(), msg)
}

// unique records an entry's name. A name the file gives must be unique; a
// derived one (from the port or address) gets a numeric suffix instead,
// since two entries may well expose one port under two keys.
func (p *parser) unique(seen map[string]string, name string, given bool, kind string, i int) string {
	field := fmt.Sprintf("%s[%d]", kind, i)
	if other, dup := seen[name]; dup {
		if given {
			p.fail(p.lines.entryField(kind, i, "name"), field+".name", fmt.Sprintf("name %q is already used by %s", name, other))
			return name
		}
		base := name
		for n := 2; dup; n++ {
			name = fmt.Sprintf("%s#%d", base, n)
			_, dup = seen[name]
		}
	}
	seen[name] = field
	return name
}

func (p *parser) expose(i int, r rawExpose) Expose {
	field := fmt.Sprintf("expose[%d]", i)
	at := func(keys ...string) int { return p.lines.entryField("expose", i, keys...) }
	var e Expose
	var set bool
	if e.Target, set = p.portOrAddress(r.Port, r.Address, "address", 1, field, at); !set && len(r.Services) == 0 {
		p.fail(at(), field, "needs port or address")
	}
	switch {
	case r.Key != nil && r.Secret != nil:
		p.fail(at("secret_file"), field, "set key or secret_file, not both")
	case r.Secret != nil:
		e.KeyFile = p.path(*r.Secret)
		c, err := holesail.ReadSecretFile(e.KeyFile)
		if err != nil {
			p.fail(at("secret_file"), field+".secret_file", err.Error())
		}
		e.KeyPair, e.Private = c.KeyPair, true
		e.Allow = append(e.Allow, c.PublicKey)
	case r.Key == nil:
		p.fail(at(), field, "needs key (the path of a seed file; `keytunnel keygen --out FILE` makes one) or secret_file (a private connection string)")
	default:
		e.KeyFile = *r.Key
		if !filepath.IsAbs(e.KeyFile) {
			e.KeyFile = filepath.Join(p.keyDir, e.KeyFile)
		}
		kp, err := key.ReadSeedFile(e.KeyFile)
		if err != nil {
			p.fail(at("key"), field+".key", err.Error())
		}
		e.KeyPair = kp
	}
	for j, a := range r.Allow {
		k, err := key.ParsePublicKey(a)
		if err != nil {
			p.fail(at("allow"), fmt.Sprintf("%s.allow[%d]", field, j), err.Error())
			continue
		}
		e.Allow = append(e.Allow, k)
	}
	e.Raw = r.Raw != nil && *r.Raw
	e.Holesail = r.HS != nil && *r.HS
	e.Replace = r.Replace != nil && *r.Replace
	if r.Relay != nil {
		e.Relay = Relay{Set: true, Keys: p.relayKeys(at("relay_through"), field+".relay_through", r.Relay)}
	}
	limit := func(v *int64, name string, max int64) int64 {
		if v == nil {
			return 0
		}
		if *v < 1 || *v > max {
			p.fail(at(name), field+"."+name, fmt.Sprintf("%d is out of range (1-%d; leave it out for the default)", *v, max))
			return 0
		}
		return *v
	}
	e.Budget = tunnel.Budget{
		Sessions:          int(limit(r.MaxSessions, "max_sessions", 1<<20)),
		StreamsPerSession: int(limit(r.MaxStreamsPerSession, "max_streams_per_session", 1<<20)),
		Streams:           int(limit(r.MaxStreams, "max_streams", 1<<20)),
		Memory:            limit(r.MaxBufferMiB, "max_buffer_mib", 1<<20) << 20,
	}
	e.UDP, e.Flows = p.udp(r.rawUDP, field, at)
	if e.UDP && strings.HasPrefix(e.Target, unixPrefix) {
		p.fail(at("udp"), field+".udp", "a UDP service is a port, not a Unix socket (unix: address)")
	}
	e.Services = p.services(r, e.Allow, field, at)
	if e.Target == "" && e.UDP && len(e.Services) > 0 {
		p.fail(at("udp"), field+".udp", "applies to the entry's port or address; give a UDP service udp = true in its own table")
	}
	if e.Raw && len(e.Services) > 0 {
		p.fail(at("raw"), field+".raw", "raw mode serves one service; drop raw or the services")
	}
	if r.Name != nil {
		e.Name = p.checkName(at("name"), field, *r.Name)
	} else if r.Port != nil {
		e.Name = fmt.Sprintf("expose-%d", *r.Port)
	} else if e.Target != "" {
		e.Name = "expose-" + e.Target
	} else if len(e.Services) > 0 {
		e.Name = "expose-" + e.Services[0].Name
	}
	return e
}

// services parses an entry's [expose.services.NAME] tables. allow is the
// entry's list, which every service gets too. The default service (the
// entry's port or address, or else the one with default = true) comes
// first; the rest follow by name, so that an unchanged file compares
// equal.
func (p *parser) services(r rawExpose, allow []key.PublicKey, field string, at func(keys ...string) int) []tunnel.Service {
	names := make([]string, 0, len(r.Services))
	for n := range r.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []tunnel.Service
	var defaults []string
	for _, n := range names {
		rs := r.Services[n]
		sf := field + ".services." + n
		sat := func(k string) int { return at("services."+n+"."+k, "services."+n, "services") }
		if err := tunnel.CheckServiceName(n); err != nil {
			// Reported, and parsed on, so that its other fields
			// (default = true) do not add errors of their own.
			p.fail(sat(""), sf, strings.TrimPrefix(err.Error(), tunnel.ErrBadService.Error()+": "))
		}
		svc := tunnel.Service{Name: n, UDP: rs.UDP != nil && *rs.UDP}
		var set bool
		if svc.Target, set = p.portOrAddress(rs.Port, rs.Address, "address", 1, sf, func(k ...string) int { return sat(k[0]) }); !set {
			p.fail(sat(""), sf, "needs port or address")
		}
		if svc.UDP && strings.HasPrefix(svc.Target, unixPrefix) {
			p.fail(sat("udp"), sf+".udp", "a UDP service is a port, not a Unix socket (unix: address)")
		}
		keys := append([]key.PublicKey(nil), allow...)
		for j, a := range rs.Allow {
			k, err := key.ParsePublicKey(a)
			if err != nil {
				p.fail(sat("allow"), fmt.Sprintf("%s.allow[%d]", sf, j), err.Error())
				continue
			}
			keys = append(keys, k)
		}
		svc.Allow = tunnel.NewAllowList(keys...)
		if rs.Default != nil && *rs.Default {
			defaults = append(defaults, n)
			out = append([]tunnel.Service{svc}, out...)
			continue
		}
		out = append(out, svc)
	}
	hasTarget := r.Port != nil || r.Address != nil
	switch {
	case len(r.Services) == 0:
	case hasTarget && len(defaults) > 0:
		p.fail(at("services."+defaults[0]+".default"), field+".services."+defaults[0]+".default", "the entry's port or address is its default service; drop default = true or the entry's port")
	case !hasTarget && len(defaults) == 0:
		p.fail(at("services"), field, "needs port or address (the default service), or default = true in one of its services")
	case len(defaults) > 1:
		p.fail(at("services."+defaults[1]+".default"), field+".services", fmt.Sprintf("default = true in more than one service (%s)", strings.Join(defaults, ", ")))
	}
	return out
}

func (p *parser) forward(i int, r rawForward) Forward {
	field := fmt.Sprintf("forward[%d]", i)
	at := func(keys ...string) int { return p.lines.entryField("forward", i, keys...) }
	var fw Forward
	hs := false
	switch {
	case r.Key == nil && r.Secret == nil:
		p.fail(at(), field, "needs key (the public key of the service, or its holesail connection string) or secret_file")
	case r.Key != nil && holesail.LooksPrivate(*r.Key):
		p.fail(at("key"), field+".key", "a private connection string is a secret: put it in a file of its own (mode 0600) and name that with secret_file")
	case r.Key != nil:
		c, err := holesail.Parse(strings.TrimSpace(*r.Key), false)
		if err != nil {
			p.fail(at("key"), field+".key", err.Error())
		}
		fw.Key, hs = c.PublicKey, c.Form == holesail.FormURL
	}
	if r.Secret != nil {
		c, err := holesail.ReadSecretFile(p.path(*r.Secret))
		switch {
		case err != nil:
			p.fail(at("secret_file"), field+".secret_file", err.Error())
		case r.Key != nil && c.PublicKey != fw.Key:
			p.fail(at("secret_file"), field+".secret_file", fmt.Sprintf("holds the string of service %s, not of key %s", c.PublicKey, fw.Key))
		default:
			fw.Key, fw.KeyPair, hs = c.PublicKey, c.KeyPair, true
		}
	}
	var set bool
	if fw.Listen, set = p.portOrAddress(r.Port, r.Listen, "listen", 0, field, at); !set {
		p.fail(at(), field, "needs listen or port")
	}
	// holesail servers speak raw; a keytunnel expose serves raw clients too.
	fw.Raw = r.Raw != nil && *r.Raw || hs
	if r.Service != nil {
		fw.Service = *r.Service
		switch err := tunnel.CheckServiceName(fw.Service); {
		case err != nil:
			p.fail(at("service"), field+".service", strings.TrimPrefix(err.Error(), tunnel.ErrBadService.Error()+": "))
		case fw.Raw:
			p.fail(at("service"), field+".service", "raw mode (raw, hs:// keys, secret_file) cannot ask for a named service")
		}
	}
	if r.Relay != nil {
		fw.Relay = Relay{Set: true, Keys: p.relayKeys(at("relay_through"), field+".relay_through", r.Relay)}
	}
	fw.UDP, fw.Flows = p.udp(r.rawUDP, field, at)
	if fw.UDP && strings.HasPrefix(fw.Listen, unixPrefix) {
		p.fail(at("udp"), field+".udp", "a UDP forward listens on a port, not a Unix socket (unix: listen)")
	}
	if r.Name != nil {
		fw.Name = p.checkName(at("name"), field, *r.Name)
	} else {
		fw.Name = "forward-" + fw.Listen
	}
	return fw
}

// portOrAddress reads an entry's port (on 127.0.0.1, from minPort up)
// or its address field (addrKey: address, listen). set reports that one
// of them was given; a problem with it is reported here.
func (p *parser) portOrAddress(port *int64, addr *string, addrKey string, minPort int64, field string, at func(keys ...string) int) (target string, set bool) {
	switch {
	case port != nil && addr != nil:
		p.fail(at("port"), field, "set port or "+addrKey+", not both")
	case port != nil:
		if *port < minPort || *port > 65535 {
			p.fail(at("port"), field+".port", fmt.Sprintf("%d is not a port (%d-65535)", *port, minPort))
		}
		target = net.JoinHostPort("127.0.0.1", strconv.FormatInt(*port, 10))
	case addr != nil:
		a, err := p.address(*addr)
		if err != nil {
			p.fail(at(addrKey), field+"."+addrKey, err.Error())
		}
		target = a
	default:
		return "", false
	}
	return target, true
}

// udp parses an entry's udp, udp_idle_timeout and max_flows; the last two
// only go with udp = true.
func (p *parser) udp(r rawUDP, field string, at func(keys ...string) int) (bool, tunnel.FlowOptions) {
	on := r.UDP != nil && *r.UDP
	var fo tunnel.FlowOptions
	if r.IdleTimeout != nil {
		d, err := time.ParseDuration(*r.IdleTimeout)
		switch {
		case !on:
			p.fail(at("udp_idle_timeout"), field+".udp_idle_timeout", "only applies with udp = true")
		case err != nil || d < 10*time.Millisecond || d > 24*time.Hour:
			p.fail(at("udp_idle_timeout"), field+".udp_idle_timeout", fmt.Sprintf("%q is not a duration from 10ms to 24h (such as \"60s\"; leave it out for the default)", *r.IdleTimeout))
		default:
			fo.IdleTimeout = d
		}
	}
	if r.MaxFlows != nil {
		switch {
		case !on:
			p.fail(at("max_flows"), field+".max_flows", "only applies with udp = true")
		case *r.MaxFlows < 1 || *r.MaxFlows > 1<<20:
			p.fail(at("max_flows"), field+".max_flows", fmt.Sprintf("%d is out of range (1-%d; leave it out for the default)", *r.MaxFlows, 1<<20))
		default:
			fo.MaxFlows = int(*r.MaxFlows)
		}
	}
	return on, fo
}

// path is a file named in the configuration, relative to its directory.
func (p *parser) path(f string) string {
	if filepath.IsAbs(f) {
		return f
	}
	return filepath.Join(p.dir, f)
}

// relayKeys parses a relay_through list (top-level or an entry's).
func (p *parser) relayKeys(line int, field string, raw []string) []key.PublicKey {
	var keys []key.PublicKey
	for i, k := range raw {
		pk, err := key.ParsePublicKey(k)
		if err != nil {
			p.fail(line, fmt.Sprintf("%s[%d]", field, i), err.Error())
			continue
		}
		keys = append(keys, pk)
	}
	return keys
}

func (p *parser) checkName(line int, field, name string) string {
	if strings.TrimSpace(name) == "" {
		p.fail(line, field+".name", "name is empty")
	}
	return name
}

// unixPrefix marks a Unix socket path in an address (stack.UnixPrefix).
const unixPrefix = "unix:"

// address checks an expose address or a forward's listen address:
// host:port, or unix:PATH with a relative PATH taken from the file's
// directory, as key paths are.
func (p *parser) address(s string) (string, error) {
	path, ok := strings.CutPrefix(s, unixPrefix)
	if !ok {
		_, _, err := splitHostPort(s)
		return s, err
	}
	if path == "" {
		return "", fmt.Errorf("%q: want unix:PATH, the path of a Unix socket", s)
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.dir, path)
	}
	return unixPrefix + filepath.Clean(path), nil
}

// splitHostPort checks a host:port with a numeric port in 0-65535.
func splitHostPort(s string) (string, int, error) {
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", s)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not a number in 0-65535", s, ps)
	}
	return h, port, nil
}

// lineIndex finds lines of keys for error messages. BurntSushi/toml reports
// positions of syntax errors but not of the keys of array-of-tables
// entries, so this scans the text: it knows where each [[expose]] and
// [[forward]] header starts and which keys follow it. It reads only lines
// of the form `key = ...` and `[[table]]`/`[table]`, which is how these files
// are written; anything else just yields line 0 (unknown).
type lineIndex struct {
	topKeys map[string]int
	entries map[string][]entryLines // "expose" → one per [[expose]]
}

type entryLines struct {
	header int
	keys   map[string]int
}

func scanLines(data []byte) lineIndex {
	li := lineIndex{topKeys: map[string]int{}, entries: map[string][]entryLines{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	var cur *entryLines
	prefix := "" // inside [table.sub]: "sub." before each key
	inTable := false
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(l, "[["):
			name := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(l, "]]", 2)[0], "[["), "]]"))
			li.entries[name] = append(li.entries[name], entryLines{header: n, keys: map[string]int{}})
			es := li.entries[name]
			cur = &es[len(es)-1]
			prefix, inTable = "", true
		case strings.HasPrefix(l, "["):
			// [expose.services.ssh] is a table of the last [[expose]].
			name := strings.TrimSpace(strings.SplitN(strings.TrimPrefix(l, "["), "]", 2)[0])
			table, sub, ok := strings.Cut(name, ".")
			es := li.entries[table]
			cur, prefix, inTable = nil, "", true
			if ok && len(es) > 0 {
				cur, prefix = &es[len(es)-1], sub+"."
				if _, seen := cur.keys[sub]; !seen {
					cur.keys[sub] = n
				}
			}
		default:
			k, _, ok := strings.Cut(l, "=")
			if !ok || strings.HasPrefix(l, "#") {
				continue
			}
			k = prefix + strings.Trim(strings.TrimSpace(k), `"'`)
			if cur != nil {
				if _, seen := cur.keys[k]; !seen {
					cur.keys[k] = n
				}
			} else if !inTable {
				if _, seen := li.topKeys[k]; !seen {
					li.topKeys[k] = n
				}
			}
		}
	}
	return li
}

func (li lineIndex) top(k string) int { return li.topKeys[k] }

// entryField returns the line of the first of keys present in entry i of
// table, or the entry's header line.
func (li lineIndex) entryField(table string, i int, keys ...string) int {
	es := li.entries[table]
	if i >= len(es) {
		return 0
	}
	for _, k := range keys {
		if n, ok := es[i].keys[k]; ok {
			return n
		}
	}
	return es[i].header
}

func (li lineIndex) anyEntryField(table, k string) int {
	for _, e := range li.entries[table] {
		if n, ok := e.keys[k]; ok {
			return n
		}
	}
	return 0
}

// Change is what a reload does to the running entries.
type Change struct {
	StartExpose, StopExpose   []Expose
	StartForward, StopForward []Forward
	Kept                      []string // names of entries left running untouched
}

// Diff compares the running configuration with a new one. An entry whose
// name is in both and whose settings are equal is kept (its connections go
// on); one whose settings changed is stopped and started again; the rest
// stop or start. Global settings are not diffed.
func Diff(old, cur *File) Change {
	var c Change
	oldE := map[string]Expose{}
	for _, e := range old.Expose {
		oldE[e.Name] = e
	}
	for _, e := range cur.Expose {
		if o, ok := oldE[e.Name]; ok && exposeEqual(o, e) {
			c.Kept = append(c.Kept, e.Name)
			delete(oldE, e.Name)
			continue
		}
		c.StartExpose = append(c.StartExpose, e)
	}
	for _, e := range old.Expose {
		if _, ok := oldE[e.Name]; ok {
			c.StopExpose = append(c.StopExpose, e)
		}
	}
	oldF := map[string]Forward{}
	for _, f := range old.Forward {
		oldF[f.Name] = f
	}
	for _, f := range cur.Forward {
		if o, ok := oldF[f.Name]; ok && forwardEqual(o, f) {
			c.Kept = append(c.Kept, f.Name)
			delete(oldF, f.Name)
			continue
		}
		c.StartForward = append(c.StartForward, f)
	}
	for _, f := range old.Forward {
		if _, ok := oldF[f.Name]; ok {
			c.StopForward = append(c.StopForward, f)
		}
	}
	return c
}

// exposeEqual leaves Replace out: it matters only when an entry starts,
// so changing it alone restarts nothing.
func exposeEqual(a, b Expose) bool {
	return a.Name == b.Name && a.Target == b.Target && a.KeyPair.Public == b.KeyPair.Public &&
		a.Raw == b.Raw && slices.Equal(a.Allow, b.Allow) && a.Relay.equal(b.Relay) && a.Budget == b.Budget &&
		a.UDP == b.UDP && a.Flows == b.Flows && servicesEqual(a.Services, b.Services) &&
		a.Private == b.Private && a.Holesail == b.Holesail
}

func servicesEqual(a, b []tunnel.Service) bool {
	return slices.EqualFunc(a, b, func(x, y tunnel.Service) bool {
		return x.Name == y.Name && x.Target == y.Target && x.UDP == y.UDP && maps.Equal(x.Allow, y.Allow)
	})
}

// Default is the entry's default service: its target (Target, or the
// first service's) and whether it is UDP.
func (e Expose) Default() (target string, udp bool) {
	if e.Target == "" && len(e.Services) > 0 {
		return e.Services[0].Target, e.Services[0].UDP
	}
	return e.Target, e.UDP
}

// SessionAllow is the allow list of the entry's peer sessions, for the
// DHT firewall: the union of its services' lists, nil when any is open
// (tunnel.SessionAllow).
func (e Expose) SessionAllow() []key.PublicKey {
	lists := make([]tunnel.AllowList, 0, len(e.Services)+1)
	if e.Target != "" {
		lists = append(lists, tunnel.NewAllowList(e.Allow...))
	}
	for _, s := range e.Services {
		lists = append(lists, s.Allow)
	}
	var out []key.PublicKey
	for k := range tunnel.SessionAllow(lists...) {
		out = append(out, k)
	}
	return out
}

func forwardEqual(a, b Forward) bool {
	return a.Name == b.Name && a.Key == b.Key && a.Service == b.Service && a.Listen == b.Listen && a.Raw == b.Raw && a.Relay.equal(b.Relay) &&
		a.UDP == b.UDP && a.Flows == b.Flows &&
		a.KeyPair.Public == b.KeyPair.Public
}
