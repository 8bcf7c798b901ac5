package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/keytunnel/keytunnel/internal/key"
)

// KeyOptions name a key pair: a seed file (--key) or a hex seed (--seed).
// At most one may be set.
type KeyOptions struct {
	File string
	Seed string
}

func (k KeyOptions) given() bool { return k.File != "" || k.Seed != "" }

// load returns the key pair k names, or a zero KeyPair when it names none.
func (k KeyOptions) load() (key.KeyPair, error) {
	switch {
	case k.File != "" && k.Seed != "":
		return key.KeyPair{}, errors.New("give --key or --seed, not both")
	case k.Seed != "":
		s, err := key.ParseSeed(k.Seed)
		if err != nil {
			return key.KeyPair{}, fmt.Errorf("--seed: not a seed (want 64 hex characters)")
		}
		return key.FromSeed(s), nil
	case k.File != "":
		if _, err := os.Stat(k.File); errors.Is(err, fs.ErrNotExist) {
			return key.KeyPair{}, fmt.Errorf("--key %s: no such file (`keytunnel keygen --out %s` creates one)", k.File, k.File)
		}
		kp, err := key.ReadSeedFile(k.File)
		if err != nil {
			return key.KeyPair{}, fmt.Errorf("--key %s: not a seed file (want 64 hex characters or 32 bytes)", k.File)
		}
		return kp, nil
	}
	return key.KeyPair{}, nil
}

// keyDir is where expose keeps the keys it creates.
func (e *Env) keyDir() (string, error) {
	if e.KeyDir != "" {
		return e.KeyDir, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no directory for keys (%v); pass --key FILE", err)
	}
	return filepath.Join(d, "keytunnel", "keys"), nil
}

// exposeKey returns the key pair an expose of target serves under: the one
// opts names, else the one saved for target by an earlier run, else a new
// one, saved so that the next run keeps the same public key.
func (e *Env) exposeKey(opts KeyOptions, target string) (kp key.KeyPair, file string, created bool, err error) {
	if opts.given() {
		kp, err = opts.load()
		return kp, opts.File, false, err
	}
	dir, err := e.keyDir()
	if err != nil {
		return kp, "", false, err
	}
	file = filepath.Join(dir, "expose-"+fileSafe(target)+".key")
	if kp, err = key.ReadSeedFile(file); err == nil {
		return kp, file, false, nil
	}
	if _, serr := os.Stat(file); serr == nil {
		return kp, file, false, fmt.Errorf("%s: not a seed file; move it away or pass --key", file)
	}
	if kp, err = key.Generate(nil); err != nil {
		return kp, "", false, err
	}
	if err = key.WriteSeedFile(file, kp.Seed()); err != nil {
		return kp, "", false, fmt.Errorf("saving the new key: %w", err)
	}
	return kp, file, true, nil
}

// fileSafe turns a host:port into a file name part: 127.0.0.1:8080 is
// "8080", other hosts keep their name.
func fileSafe(target string) string {
	h, p, _ := net.SplitHostPort(target)
	if h == "127.0.0.1" || h == "localhost" {
		return p
	}
	return strings.NewReplacer(":", "-", "/", "-", "[", "", "]", "").Replace(h) + "-" + p
}

// parsePublicKey reads a peer's key from the command line.
func parsePublicKey(s string) (key.PublicKey, error) {
	k, err := key.ParsePublicKey(s)
	if err != nil {
		return k, fmt.Errorf("%q is not a public key (want 64 hex or 52 z-base-32 characters)", s)
	}
	return k, nil
}

// hostPort reads "PORT" (meaning 127.0.0.1:PORT) or "HOST:PORT". Port 0 is
// allowed only if zeroOK.
func hostPort(what, s string, zeroOK bool) (string, error) {
	if p, err := strconv.Atoi(s); err == nil {
		s = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%s %q: want PORT or HOST:PORT", what, s)
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !zeroOK) {
		return "", fmt.Errorf("%s %q: %q is not a TCP port", what, s, ps)
	}
	if h == "" {
		h = "127.0.0.1"
	}
	return net.JoinHostPort(h, ps), nil
}

// listenTCP opens a forward's local port with a clear error when it is
// taken. Accepted connections come without TCP keepalive; the Forwarder
// turns it on for clients on other hosts.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%s is already in use (another program listens there)", addr)
	}
	if errors.Is(err, syscall.EACCES) {
		return nil, fmt.Errorf("%s: permission denied (ports below 1024 need privileges)", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ln, nil
}

func parseAllow(list []string) ([]key.PublicKey, error) {
	var out []key.PublicKey
	for _, s := range list {
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			k, err := parsePublicKey(f)
			if err != nil {
				return nil, fmt.Errorf("--allow: %w", err)
			}
			out = append(out, k)
		}
	}
	return out, nil
}

// SplitList flattens comma-separated values (as --bootstrap a,b) and drops
// empty ones. The result is never nil, so that an empty --bootstrap means
// "no bootstrap nodes" rather than "the public ones".
func SplitList(vs []string) []string {
	out := []string{}
	for _, v := range vs {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
