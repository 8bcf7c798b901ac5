package app

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
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
func parsePublicKey(s string) (key.PublicKey, error) { return stack.ParsePublicKey(s) }

// hostPort reads "PORT" (meaning 127.0.0.1:PORT) or "HOST:PORT". Port 0 is
// allowed only if zeroOK.
func hostPort(what, s string, zeroOK bool) (string, error) { return stack.HostPort(what, s, zeroOK) }

// listenTCP opens a forward's local port (see stack.ListenTCP).
func listenTCP(addr string) (net.Listener, error) { return stack.ListenTCP(addr) }

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
