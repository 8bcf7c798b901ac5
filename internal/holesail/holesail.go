package holesail

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"unicode"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Scheme is the prefix of holesail's connection strings; four flag
// characters follow it, then the key or secret.
const Scheme = "hs://"

// MaxSecret bounds a secret's length: holesail sets none, but a string
// pasted by mistake (a whole file) should get an error, not a key.
const MaxSecret = 1024

// Form says how a connection string was written.
type Form int

const (
	FormURL    Form = iota // hs://…
	FormKey                // a bare public key
	FormSeed               // a bare z-base-32 seed (holesail-server's secure key)
	FormSecret             // a bare secret
)

// Conn is a parsed connection string: the service's public key and, in
// private mode, the key pair both ends use.
type Conn struct {
	Form      Form
	Private   bool
	PublicKey key.PublicKey
	// KeyPair is the private mode's key pair (zero in public mode).
	KeyPair key.KeyPair
	// secret is the private string's secret, kept to write the string
	// again; empty for the seed form.
	secret string
}

// String is the connection string for holesail 2.4: hs://0000<z32 key>,
// or hs://s000<secret>. A private Conn from a bare seed has no secret to
// write; its string is the seed in z-base-32, as holesail-server prints it.
func (c Conn) String() string {
	switch {
	case !c.Private:
		return Scheme + "0000" + c.PublicKey.Z32()
	case c.secret != "":
		return Scheme + "s000" + c.secret
	}
	seed := c.KeyPair.Seed()
	return key.PublicKey(seed).Z32()
}

// Redacted names c without its secret, for logs and errors.
func (c Conn) Redacted() string {
	if !c.Private {
		return c.PublicKey.String()
	}
	return "private connection to " + c.PublicKey.String()
}

// Public is the public connection string of pk.
func Public(pk key.PublicKey) Conn { return Conn{Form: FormKey, PublicKey: pk} }

// FromSecret is the private Conn of secret, as holesail derives it: the
// seed is SHA-256 of the secret's bytes.
func FromSecret(secret string) (Conn, error) {
	if err := checkSecret(secret); err != nil {
		return Conn{}, err
	}
	kp := key.FromSeed(key.Seed(sha256.Sum256([]byte(secret))))
	return Conn{Form: FormSecret, Private: true, PublicKey: kp.Public, KeyPair: kp, secret: secret}, nil
}

// NewSecret makes a secret as holesail does for a private server: 32
// random bytes in hex.
func NewSecret(rnd io.Reader) (string, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var b [32]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return "", fmt.Errorf("holesail: making a secret: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// New makes a private Conn from a new secret (NewSecret).
func New(rnd io.Reader) (Conn, error) {
	s, err := NewSecret(rnd)
	if err != nil {
		return Conn{}, err
	}
	return FromSecret(s)
}

func checkSecret(s string) error {
	switch {
	case s == "":
		return ErrEmptySecret
	case len(s) > MaxSecret:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrSecretTooLong, len(s), MaxSecret)
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ErrSecretChars
		}
	}
	return nil
}

// LooksPrivate says whether s is written as a private string (hs://s…),
// without parsing it: to warn that it sits on a command line.
func LooksPrivate(s string) bool {
	return strings.HasPrefix(s, Scheme) && len(s) > len(Scheme) && s[len(Scheme)] == 's'
}

// IsURL says whether s is written in holesail's hs:// form.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// Parse reads a connection string (see the package documentation for the
// forms). private says that a bare string is a private one (a secret or a
// z-base-32 seed), as holesail's secure option does; it cannot turn an
// hs://0000 string private. Errors never contain the secret.
func Parse(s string, private bool) (Conn, error) {
	if rest, ok := strings.CutPrefix(s, Scheme); ok {
		if len(rest) < 4 {
			return Conn{}, ErrShortURL
		}
		flags, k := rest[:4], rest[4:]
		if flags[0] == 's' {
			c, err := FromSecret(k)
			if err != nil {
				return Conn{}, fmt.Errorf("private hs:// string: %w", err)
			}
			c.Form = FormURL
			return c, nil
		}
		if private {
			return Conn{}, ErrPublicURL
		}
		pk, err := parseKey(k)
		if err != nil {
			return Conn{}, fmt.Errorf("public hs:// string: %w", err)
		}
		return Conn{Form: FormURL, PublicKey: pk}, nil
	}
	if !private {
		pk, err := parseKey(s)
		if err != nil {
			return Conn{}, err
		}
		return Public(pk), nil
	}
	if seed, ok := z32Seed(s); ok {
		kp := key.FromSeed(seed)
		return Conn{Form: FormSeed, Private: true, PublicKey: kp.Public, KeyPair: kp}, nil
	}
	return FromSecret(s)
}

func parseKey(s string) (key.PublicKey, error) {
	if len(s) != 52 && len(s) != 64 {
		return key.PublicKey{}, fmt.Errorf("%w: %q has %d characters", ErrNotKey, abbrev(s), len(s))
	}
	pk, err := key.ParsePublicKey(s)
	if err != nil || strings.TrimSpace(s) != s {
		return key.PublicKey{}, fmt.Errorf("%w: %q", ErrNotKey, abbrev(s))
	}
	return pk, nil
}

// z32Seed reads 52 lowercase z-base-32 characters as a seed.
func z32Seed(s string) (key.Seed, bool) {
	if len(s) != 52 || strings.ToLower(s) != s {
		return key.Seed{}, false
	}
	pk, err := key.ParsePublicKey(s)
	return key.Seed(pk), err == nil
}

// abbrev shortens what an error quotes of a public string.
func abbrev(s string) string {
	if len(s) > 70 {
		return s[:64] + "…"
	}
	return s
}

// Record is the value holesail-server puts under its key pair: where its
// clients should listen by default, and whether the service is UDP.
type Record struct {
	Host string `json:"host"`
	UDP  bool   `json:"udp"`
	Port int    `json:"port"`
	// Keytunnel is keytunnel's own addition (holesail's clients ignore
	// it): the tunnel protocol the service speaks besides holesail's raw
	// streams, so that keytunnel clients given a holesail string can use
	// one multiplexed session instead of a DHT connection per TCP
	// connection. Empty for a holesail server.
	Keytunnel string `json:"keytunnel,omitempty"`
}

// MaxRecord bounds the record's size (hyperdht's mutable values are at
// most 1000 bytes on the wire).
const MaxRecord = 1000

// Marshal encodes r as holesail-server does: JSON with the keys in its
// order (host, udp, port), then keytunnel's if set.
func (r Record) Marshal() []byte {
	b, _ := json.Marshal(r) // cannot fail: strings, a bool and an int
	return b
}

// ParseRecord reads a holesail record. holesail omits udp when its server
// was not told (JSON.stringify drops undefined) and its port may be a
// string; both are read. A record without a valid port is an error.
func ParseRecord(b []byte) (Record, error) {
	if len(b) > MaxRecord {
		return Record{}, fmt.Errorf("%w: %d bytes", ErrRecord, len(b))
	}
	var raw struct {
		Host      *string         `json:"host"`
		UDP       *bool           `json:"udp"`
		Port      json.RawMessage `json:"port"`
		Keytunnel json.RawMessage `json:"keytunnel"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrRecord, err)
	}
	var r Record
	if raw.Host != nil {
		r.Host = *raw.Host
		if r.Host != "" && net.ParseIP(r.Host) == nil && !validHostname(r.Host) {
			return Record{}, fmt.Errorf("%w: host %q", ErrRecord, abbrev(r.Host))
		}
	}
	if raw.UDP != nil {
		r.UDP = *raw.UDP
	}
	// Not ours to insist on: anything but a short string is ignored.
	if json.Unmarshal(raw.Keytunnel, &r.Keytunnel) != nil || len(r.Keytunnel) > 32 {
		r.Keytunnel = ""
	}
	var port any
	if err := json.Unmarshal(raw.Port, &port); err != nil {
		return Record{}, fmt.Errorf("%w: no port", ErrRecord)
	}
	switch p := port.(type) {
	case float64:
		r.Port = int(p)
		if float64(r.Port) != p {
			r.Port = -1
		}
	case string:
		if _, err := fmt.Sscanf(p, "%d", &r.Port); err != nil || fmt.Sprint(r.Port) != p {
			r.Port = -1
		}
	default:
		r.Port = -1
	}
	if r.Port < 1 || r.Port > 65535 {
		return Record{}, fmt.Errorf("%w: port %s", ErrRecord, abbrev(string(raw.Port)))
	}
	return r, nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, c := range h {
		if !(c == '.' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
