package app

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
)

// KeyOptions name a key pair: a seed file (--key, or --seed-file FILE),
// a seed on stdin (--seed-file -), a hex seed on the command line
// (--seed, which other users can read in the process list) or in the
// environment (KEYTUNNEL_SEED, used when no option names a key).
type KeyOptions struct {
	File     string
	Seed     string
	SeedFile string // a file, or "-" for one line on stdin
	SeedEnv  string // $KEYTUNNEL_SEED
}

// SeedEnvVar is the environment variable a seed can be given in, and how
// `keytunnel ssh` hands one to its ProxyCommand.
const SeedEnvVar = "KEYTUNNEL_SEED"

func (k KeyOptions) given() bool {
	return k.File != "" || k.Seed != "" || k.SeedFile != "" || k.SeedEnv != ""
}

// fromFile is the seed file k names, if it names one.
func (k KeyOptions) fromFile() (flag, file string) {
	switch {
	case k.File != "":
		return "--key", k.File
	case k.SeedFile != "" && k.SeedFile != "-":
		return "--seed-file", k.SeedFile
	}
	return "", ""
}

// load returns the key pair k names, or a zero KeyPair when it names none.
// It warns about a --seed on the command line.
func (e *Env) loadKey(k KeyOptions) (key.KeyPair, error) {
	e.init()
	var set []string
	for _, o := range []struct{ name, v string }{{"--key", k.File}, {"--seed", k.Seed}, {"--seed-file", k.SeedFile}} {
		if o.v != "" {
			set = append(set, o.name)
		}
	}
	switch {
	case len(set) == 2:
		return key.KeyPair{}, fmt.Errorf("give %s or %s, not both", set[0], set[1])
	case len(set) > 2:
		return key.KeyPair{}, errors.New("give one of --key, --seed and --seed-file")
	case k.Seed != "":
		kp, err := parseSeed("--seed", k.Seed)
		if err == nil {
			e.logger.Warn("--seed shows the secret seed to every user of this machine (ps); use --key FILE, --seed-file - or " + SeedEnvVar + " instead")
		}
		return kp, err
	case k.SeedFile == "-":
		line, err := readLine(e.Stdin, 256)
		if err != nil {
			return key.KeyPair{}, fmt.Errorf("--seed-file -: reading the seed from stdin: %w", err)
		}
		return parseSeed("--seed-file - (stdin)", line)
	}
	if flag, file := k.fromFile(); file != "" {
		return readKeyFile(flag+" "+file, file)
	}
	if k.SeedEnv != "" {
		return parseSeed(SeedEnvVar, k.SeedEnv)
	}
	return key.KeyPair{}, nil
}

// readKeyFile reads a seed file; errors start with what (the option and
// the file as the user gave them).
func readKeyFile(what, file string) (key.KeyPair, error) {
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		return key.KeyPair{}, fmt.Errorf("%s: no such file (`keytunnel keygen --out %s` creates one)", what, file)
	}
	kp, err := key.ReadSeedFile(file)
	var perm *key.PermissionError
	if errors.As(err, &perm) {
		return key.KeyPair{}, fmt.Errorf("%s: %s", what, perm.Reason())
	}
	if err != nil {
		return key.KeyPair{}, fmt.Errorf("%s: not a seed file (want 64 hex characters or 32 bytes)", what)
	}
	return kp, nil
}

// KeyShow prints the public key of a seed file (file "-": a seed on
// stdin), in hex and z-base-32.
func KeyShow(env *Env, file string) error {
	env.init()
	var kp key.KeyPair
	var err error
	if file == "-" {
		kp, err = env.loadKey(KeyOptions{SeedFile: "-"})
	} else {
		kp, err = readKeyFile(file, file)
	}
	if err != nil {
		return err
	}
	env.out.emit(kp.Public.String()+"\nz32 "+kp.Public.Z32(), Event{
		Event: EvKey, PublicKey: kp.Public.String(), PublicKeyZ32: kp.Public.Z32(), KeyFile: file,
	})
	return nil
}

func parseSeed(from, s string) (key.KeyPair, error) {
	seed, err := key.ParseSeed(s)
	if err != nil {
		return key.KeyPair{}, fmt.Errorf("%s: not a seed (want 64 hex characters)", from)
	}
	return key.FromSeed(seed), nil
}

// readLine reads up to one line (at most max bytes) from r, a byte at a
// time so that nothing after the line is consumed: ssh may read on.
func readLine(r io.Reader, max int) (string, error) {
	var b []byte
	var c [1]byte
	for len(b) < max {
		n, err := r.Read(c[:])
		if n == 1 {
			if c[0] == '\n' {
				break
			}
			b = append(b, c[0])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return string(b), nil
}

// userConfigDir is os.UserConfigDir ($XDG_CONFIG_HOME, else
// $HOME/.config) with an error that says what to set: a service manager
// or `env -i` may start keytunnel without HOME.
func userConfigDir() (string, error) {
	d, err := os.UserConfigDir()
	switch {
	case err == nil:
		return d, nil
	case os.Getenv("XDG_CONFIG_HOME") != "":
		return "", fmt.Errorf("$XDG_CONFIG_HOME (%s) is not an absolute path; set it to one", os.Getenv("XDG_CONFIG_HOME"))
	}
	return "", errors.New("$HOME is not set; set HOME (or XDG_CONFIG_HOME)")
}

// keyDir is where expose keeps the keys it creates.
func (e *Env) keyDir() (string, error) {
	if e.KeyDir != "" {
		return e.KeyDir, nil
	}
	d, err := userConfigDir()
	if err != nil {
		return "", fmt.Errorf("no directory to keep the key in: %w, or pass --key FILE", err)
	}
	return filepath.Join(d, "keytunnel", "keys"), nil
}

// exposeKey returns the key pair an expose of target serves under: the one
// opts names, else the one saved for target by an earlier run, else a new
// one, saved so that the next run keeps the same public key. A UDP
// service has keys of its own (expose-udp-PORT.key), so that the TCP and
// UDP services of one port number are two keys.
func (e *Env) exposeKey(opts KeyOptions, target string, udp bool) (kp key.KeyPair, file string, created bool, err error) {
	if opts.given() {
		kp, err = e.loadKey(opts)
		_, file = opts.fromFile()
		return kp, file, false, err
	}
	dir, err := e.keyDir()
	if err != nil {
		return kp, "", false, err
	}
	file = filepath.Join(dir, exposeFilePrefix(udp)+fileSafe(target)+".key")
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

// fileSafe turns a target into a file name part: 127.0.0.1:8080 is
// "8080", other hosts keep their name, unix:/run/app.sock is
// "unix-run-app.sock".
func fileSafe(target string) string {
	if path, ok := strings.CutPrefix(target, stack.UnixPrefix); ok {
		return "unix" + strings.NewReplacer("/", "-", `\`, "-", ":", "-").Replace(path)
	}
	h, p, _ := net.SplitHostPort(target)
	if h == "127.0.0.1" || h == "localhost" {
		return p
	}
	return strings.NewReplacer(":", "-", "/", "-", "[", "", "]", "").Replace(h) + "-" + p
}

// parsePublicKey reads a peer's key from the command line.
func parsePublicKey(s string) (key.PublicKey, error) { return stack.ParsePublicKey(s) }

// address reads "PORT" (meaning 127.0.0.1:PORT), "HOST:PORT" or
// "unix:PATH". Port 0 is allowed only if zeroOK.
func address(what, s string, zeroOK bool) (string, error) { return stack.Address(what, s, zeroOK) }

// listen opens a forward's local port or Unix socket (see stack.Listen).
func (e *Env) listen(addr string) (net.Listener, error) { return stack.Listen(addr, e.logger) }

// exposeFilePrefix starts the names of the key and secret files saved
// for an expose's target: a UDP service has files of its own, so that the
// TCP and UDP services of one port number are two keys.
func exposeFilePrefix(udp bool) string {
	if udp {
		return "expose-udp-"
	}
	return "expose-"
}

// listenLocal opens a forward's local socket: a TCP listener, or with udp
// a UDP socket (see stack.ListenUDP).
func (e *Env) listenLocal(addr string, udp bool) (io.Closer, error) {
	if udp {
		if strings.HasPrefix(addr, "unix:") {
			return nil, fmt.Errorf("%s: a UDP forward listens on a port, not a Unix socket", addr)
		}
		return stack.ListenUDP(addr)
	}
	return e.listen(addr)
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
