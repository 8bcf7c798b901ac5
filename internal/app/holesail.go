package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/holesail"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
)

// SecretEnvVar holds a private connection string (hs://s000<secret>, or
// the bare secret), so that it need not be on a command line: expose
// --private serves it, forward, connect and ssh dial it.
const SecretEnvVar = "KEYTUNNEL_SECRET"

// SecretOptions say where a private connection string comes from: the
// command line (a KEY argument written hs://s000…, or any bare string
// with Private), a file or stdin (File), or the environment (Env).
type SecretOptions struct {
	Private bool   // --private
	File    string // --secret-file FILE, or "-" for one line on stdin
	Env     string // $KEYTUNNEL_SECRET
}

const argvSecretWarning = "the private connection string on the command line shows its secret to every user of this machine (ps); use --secret-file FILE|- or " + SecretEnvVar + " instead"

// secret reads the private string of s.File or s.Env; ok is false when
// neither gives one. Errors never contain the secret.
func (e *Env) secret(s SecretOptions) (c holesail.Conn, ok bool, err error) {
	switch {
	case s.File == "-":
		line, err := readLine(e.Stdin, holesail.MaxSecret+64)
		if err != nil {
			return c, false, fmt.Errorf("--secret-file -: reading from stdin: %w", err)
		}
		c, err = holesail.ParsePrivate(line)
		if err != nil {
			return c, false, fmt.Errorf("--secret-file - (stdin): %w", err)
		}
		return c, true, nil
	case s.File != "":
		c, err = readSecretFile("--secret-file "+s.File, s.File)
		return c, err == nil, err
	case s.Env != "":
		c, err = holesail.ParsePrivate(s.Env)
		if err != nil {
			return c, false, fmt.Errorf("%s: %w", SecretEnvVar, err)
		}
		return c, true, nil
	}
	return c, false, nil
}

func readSecretFile(what, file string) (holesail.Conn, error) {
	c, err := holesail.ReadSecretFile(file)
	var perm *key.PermissionError
	switch {
	case errors.As(err, &perm):
		return c, fmt.Errorf("%s: %s", what, perm.Reason())
	case errors.Is(err, os.ErrNotExist):
		return c, fmt.Errorf("%s: no such file", what)
	case err != nil:
		return c, fmt.Errorf("%s: %w", what, err)
	}
	return c, nil
}

// remote reads the service a forward, connect or ssh names: arg is a
// public key, a holesail connection string, a bare private string (with
// s.Private), or empty or "-" when the private string comes from
// --secret-file or $KEYTUNNEL_SECRET. A public arg together with a private
// string for the same service (as ssh's %h, which is the public key) means
// that private string; one for another service is an error from a file
// and ignored from the environment (it may be set for another service).
func (e *Env) remote(arg string, s SecretOptions) (holesail.Conn, error) {
	e.init()
	sec, have, err := e.secret(s)
	if err != nil {
		return holesail.Conn{}, err
	}
	if arg == "" || arg == "-" {
		if !have {
			return holesail.Conn{}, errors.New("no service given: pass its KEY, or a private connection string with --secret-file FILE|- or " + SecretEnvVar)
		}
		return sec, nil
	}
	c, err := holesail.Parse(arg, s.Private)
	if err != nil {
		switch {
		case holesail.LooksPrivate(arg) || s.Private:
			return c, err // never quote a secret
		case holesail.IsURL(arg):
			return c, fmt.Errorf("%q: %w", arg, err)
		}
		return c, fmt.Errorf("%q is not a public key (want 64 hex or 52 z-base-32 characters) or holesail connection string (hs://…)", arg)
	}
	if c.Private {
		e.logger.Warn(argvSecretWarning)
		if s.File != "" {
			return holesail.Conn{}, errors.New("give the private connection string once: on the command line or with --secret-file")
		}
		return c, nil
	}
	if have {
		if sec.PublicKey == c.PublicKey {
			return sec, nil
		}
		if s.File != "" {
			return holesail.Conn{}, fmt.Errorf("--secret-file %s holds the string of service %s, not %s", s.File, sec.PublicKey, c.PublicKey)
		}
		e.logger.Debug(SecretEnvVar+" is for another service; not used", "its_service", sec.PublicKey.String(), "service", c.PublicKey.String())
	}
	return c, nil
}

// dialIdentity is the key pair a client dials c with: a private string's
// own key pair (holesail's secure mode: the server admits only that key),
// else the one k names.
func (e *Env) dialIdentity(c holesail.Conn, k KeyOptions) (key.KeyPair, error) {
	if !c.Private {
		return e.loadKey(k)
	}
	if k.File != "" || k.Seed != "" || k.SeedFile != "" {
		return key.KeyPair{}, errors.New("a private connection string carries the key pair to dial with; drop --key, --seed and --seed-file")
	}
	return c.KeyPair, nil
}

// holesailMode says whether c is written as holesail writes it (an hs://
// string, or a private one): then the service may be a holesail server,
// which speaks only raw streams.
func holesailMode(c holesail.Conn) bool {
	return c.Private || c.Form == holesail.FormURL
}

// muxRecord is what a keytunnel expose puts in its record's keytunnel
// field: it speaks tunnel's mux sessions (and holesail's raw streams).
const muxRecord = "mux1"

// holesailService looks up the record of a service named by a holesail
// string and says whether to speak raw mode to it: raw when asked, and
// for a holesail string unless the record says the service is a
// keytunnel expose (a holesail server takes only raw streams; a keytunnel
// expose takes both, and one mux session is much cheaper than a DHT
// connection per TCP connection). rec is the record, if any. udp says
// the caller carries UDP (forward --udp): the record must then say UDP
// too, and otherwise must not.
func (e *Env) holesailService(ctx context.Context, nw Network, c holesail.Conn, raw, udp bool) (bool, *holesail.Record, error) {
	if !holesailMode(c) {
		return raw, nil, nil
	}
	r, ok := e.lookupRecord(ctx, nw, c.PublicKey)
	if !ok {
		return true, nil, nil
	}
	switch {
	case r.UDP && !udp:
		return true, nil, fmt.Errorf("%s is a UDP service (its holesail record says so); forward it with --udp (connect and ssh carry TCP only)", c.PublicKey)
	case !r.UDP && udp:
		return true, nil, fmt.Errorf("%s is a TCP service (its holesail record says so); forward it without --udp", c.PublicKey)
	}
	return raw || r.Keytunnel != muxRecord, &r, nil
}

// records is nw's record store, if it has one (a dht-relay client has
// none).
func records(nw Network) (stack.Records, bool) {
	if a, ok := nw.(appNetwork); ok {
		nw = a.Network
	}
	r, ok := nw.(stack.Records)
	return r, ok
}

// recordTimeout bounds one lookup or store of a holesail record.
const recordTimeout = 10 * time.Second

// lookupRecord fetches the holesail record of pk: where a holesail client
// would listen. ok is false when there is none (or no usable one).
func (e *Env) lookupRecord(ctx context.Context, nw Network, pk key.PublicKey) (holesail.Record, bool) {
	rs, ok := records(nw)
	if !ok {
		return holesail.Record{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	v, err := rs.GetRecord(ctx, pk)
	if err != nil {
		if !errors.Is(err, dht.ErrNotFound) {
			e.logger.Debug("no holesail record", "service", pk.String(), "err", err)
		}
		return holesail.Record{}, false
	}
	r, err := holesail.ParseRecord(v)
	if err != nil {
		e.logger.Warn("the service's DHT record is not a holesail record; ignoring it", "service", pk.String(), "err", err)
		return holesail.Record{}, false
	}
	return r, true
}

// recordListen is the local address a record asks clients to listen on.
// Only its port is taken: the host is always 127.0.0.1, so that no
// record can make a forward listen on a public address (holesail-client
// binds the record's host, which is the server's target host and means
// nothing on the client's machine).
func recordListen(r holesail.Record) string {
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(r.Port))
}

// recordFor is the record expose --holesail publishes for target:
// holesail clients listen on its host and port, so the host is always
// 127.0.0.1 (the target's host means nothing on the client's machine).
// udp marks a UDP service, as holesail-server --udp does.
func recordFor(target string, udp bool) holesail.Record {
	_, p, _ := net.SplitHostPort(target)
	var port int
	fmt.Sscan(p, &port)
	return holesail.Record{Host: "127.0.0.1", Port: port, UDP: udp, Keytunnel: muxRecord}
}

// recordRefresh is how often the record is put again (holesail-server:
// every 50 minutes); recordRetry after a failed put.
var (
	recordRefresh = 50 * time.Minute
	recordRetry   = time.Minute
)

// publishRecord puts rec under kp (waiting for the first put, so that
// clients told the key find it) and keeps it fresh until the returned stop
// is called. A failed put is a warning: the service works without it,
// holesail clients then need their port and protocol given.
func (e *Env) publishRecord(ctx context.Context, nw Network, kp key.KeyPair, rec holesail.Record, entry string) (stop func(), err error) {
	rs, ok := records(nw)
	if !ok {
		return nil, errors.New("--holesail: a dht-relay does not carry DHT records, so holesail clients could not find this service's port; run without --relay")
	}
	log := e.logger
	if entry != "" {
		log = log.With("entry", entry)
	}
	value := rec.Marshal()
	put := func() bool {
		pctx, cancel := context.WithTimeout(ctx, recordTimeout)
		defer cancel()
		if err := rs.PutRecord(pctx, kp, value); err != nil {
			if ctx.Err() == nil {
				log.Warn("could not publish the holesail record (holesail clients need --port until it is); retrying", "err", err)
			}
			return false
		}
		log.Debug("published the holesail record", "record", string(value))
		return true
	}
	ok = put()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			wait := recordRefresh
			if !ok {
				wait = recordRetry
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			ok = put()
		}
	}()
	return func() { cancel(); wg.Wait() }, nil
}

// privateKey returns the private string an expose --private serves: from
// --secret-file or $KEYTUNNEL_SECRET, else the one saved for target by an
// earlier run, else a new one (a random secret, as holesail makes), saved
// so that the next run keeps the same string.
func (e *Env) privateKey(s SecretOptions, target string, udp bool) (c holesail.Conn, file string, created bool, err error) {
	c, have, err := e.secret(s)
	if err != nil || have {
		if s.File != "" && s.File != "-" {
			file = s.File
		}
		return c, file, false, err
	}
	dir, err := e.keyDir()
	if err != nil {
		return c, "", false, err
	}
	file = filepath.Join(dir, exposeFilePrefix(udp)+fileSafe(target)+".secret")
	if _, serr := os.Stat(file); serr == nil {
		c, err = readSecretFile(file, file)
		return c, file, false, err
	}
	if c, err = holesail.New(nil); err != nil {
		return c, "", false, err
	}
	if err = holesail.WriteSecretFile(file, c); err != nil {
		return c, "", false, fmt.Errorf("saving the new secret: %w", err)
	}
	return c, file, true, nil
}

// IsListenAddress says whether s is a forward's PORT or HOST:PORT rather
// than a service (see forward's arguments).
func IsListenAddress(s string) bool {
	if _, err := holesail.Parse(s, false); err == nil {
		return false
	}
	_, err := stack.HostPort("", s, true)
	return err == nil
}

// sshHolesail rewrites a destination written as a holesail string
// ([user@]hs://…, which ssh cannot take as a host name) to the service's
// public key, with raw mode as for any holesail string; a private string
// is returned to be handed to ProxyCommand's connect in the environment.
// Only the first argument that is such a destination is rewritten.
func (e *Env) sshHolesail(o SSHOptions) (SSHOptions, string, error) {
	for i, a := range o.Args {
		at := strings.Index(a, "@"+holesail.Scheme)
		if !strings.HasPrefix(a, holesail.Scheme) && at < 0 {
			continue
		}
		user, str := "", a
		if at >= 0 && !strings.HasPrefix(a, holesail.Scheme) {
			user, str = a[:at+1], a[at+1:]
		}
		c, err := holesail.Parse(str, false)
		if err != nil {
			if holesail.LooksPrivate(str) {
				return o, "", fmt.Errorf("ssh destination: %w", err)
			}
			return o, "", fmt.Errorf("ssh destination %q: %w", str, err)
		}
		args := append([]string(nil), o.Args...)
		args[i] = user + c.PublicKey.Z32()
		o.Args, o.Raw = args, true
		if !c.Private {
			return o, "", nil
		}
		e.logger.Warn(argvSecretWarning)
		if o.Secret.File != "" {
			return o, "", errors.New("give the private connection string once: on the command line or with --secret-file")
		}
		return o, c.String(), nil
	}
	return o, "", nil
}
