package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keytunnel/keytunnel/internal/holesail"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
	"github.com/keytunnel/keytunnel/tunnel"
)

// ExposeOptions are expose's arguments.
type ExposeOptions struct {
	Target string // PORT (on 127.0.0.1), HOST:PORT or unix:PATH; may be empty with Services
	// Services are further services under the key, NAME=TARGET (see
	// parseServices); without Target the first is the default.
	Services []string
	Key      KeyOptions
	// Allow: public keys (hex or z32), each may be comma-separated, for
	// every service; NAME=KEY[,KEY] for the service NAME alone.
	Allow  []string
	Budget BudgetOptions
	UDP    bool // the target is a UDP service
	Flows  tunnel.FlowOptions
	// Secret: with Secret.Private, the key pair is derived from a private
	// connection string (holesail's secure mode), and only clients
	// dialing with that same key pair get in.
	Secret SecretOptions
	// Holesail publishes holesail-server's DHT record (host, port, udp),
	// so that holesail clients find the port by themselves, and prints
	// the holesail connection string.
	Holesail bool
	// Replace announces even when another live process serves the key.
	Replace bool
}

// Expose serves the TCP or Unix socket service at o.Target under a key pair until ctx
// ends. The first stdout line is the public key (in JSON mode, the
// "listening" event carrying it); it is printed once the key is announced.
// Without --key or --seed, the key is the one saved for this target by an
// earlier run, or a new one saved for the next.
func Expose(ctx context.Context, env *Env, o ExposeOptions) error {
	env.init()
	svcs, err := parseServices(o.Services)
	if err != nil {
		return err
	}
	var target string
	switch {
	case o.Target != "":
		if target, err = address("target", o.Target, false); err != nil {
			return err
		}
	case len(svcs) == 0:
		return errors.New("expose needs a target: PORT, HOST:PORT, unix:PATH, or --service NAME=TARGET")
	case o.UDP:
		return errors.New("--udp applies to the positional target; give a UDP service as --service NAME=udp:PORT")
	}
	if o.UDP && strings.HasPrefix(target, "unix:") {
		return fmt.Errorf("%s: --udp exposes a UDP port, not a Unix socket", target)
	}
	allow, perService, err := parseServiceAllow(o.Allow, svcs)
	if err != nil {
		return err
	}
	// The key file, holesail record and logs follow the default service.
	defTarget, defUDP := target, o.UDP
	if target == "" {
		defTarget, defUDP = svcs[0].Target, svcs[0].UDP
	}
	budget, err := o.Budget.budget()
	if err != nil {
		return err
	}
	var (
		kp      key.KeyPair
		file    string
		created bool
		conn    holesail.Conn
	)
	switch {
	case o.Secret.Private:
		if o.Key.File != "" || o.Key.Seed != "" || o.Key.SeedFile != "" {
			return errors.New("--private derives the key pair from the private connection string; drop --key, --seed and --seed-file")
		}
		if conn, file, created, err = env.privateKey(o.Secret, defTarget, defUDP); err != nil {
			return err
		}
		kp = conn.KeyPair
		// holesail-server's private firewall: only the key pair itself.
		allow = append(allow, kp.Public)
	case o.Secret.File != "":
		return errors.New("--secret-file names a private connection string; it needs --private")
	default:
		if kp, file, created, err = env.exposeKey(o.Key, defTarget, defUDP); err != nil {
			return err
		}
		conn = holesail.Public(kp.Public)
	}
	defer env.ignoreHangup("expose")()
	stop, err := env.observe("expose")
	if err != nil {
		return err
	}
	defer stop()
	nw, err := env.openNetwork(ctx)
	if err != nil {
		return err
	}
	defer nw.Close()
	env.reg.setNetwork(nw)
	for i := range svcs {
		svcs[i].Allow = tunnel.NewAllowList(append(append([]key.PublicKey(nil), allow...), perService[svcs[i].Name]...)...)
	}
	lists := []tunnel.AllowList{}
	if target != "" {
		lists = append(lists, tunnel.NewAllowList(allow...))
	}
	for _, s := range svcs {
		lists = append(lists, s.Allow)
	}
	lo := env.listenOptions("", kp.Public, keysOf(tunnel.SessionAllow(lists...)), nil, o.Replace)
	lo.NewKey = created
	ln, err := nw.Listen(ctx, kp, lo)
	if errors.Is(err, stack.ErrServed) {
		return fmt.Errorf("%s is already served by another running process (a keytunnel expose or up with this key, here or elsewhere); stop that one, or pass --replace to take the key over", kp.Public)
	}
	if err != nil {
		return fmt.Errorf("announcing %s on the DHT: %w", kp.Public, err)
	}
	// The record tells holesail clients the port (--holesail), and
	// keytunnel clients given a holesail string that we speak mux
	// (--private strings are holesail strings).
	if o.Holesail || conn.Private {
		stop, err := env.publishRecord(ctx, nw, kp, recordFor(defTarget, defUDP), "")
		switch {
		case err == nil:
			defer stop()
		case o.Holesail:
			ln.Close()
			return err
		default:
			env.logger.Debug("no record: clients of the private string will speak raw", "err", err)
		}
	}
	ev := Event{
		Event: EvListening, PublicKey: kp.Public.String(), PublicKeyZ32: kp.Public.Z32(), Target: defTarget, UDP: defUDP,
		KeyFile: file, Created: created, Private: conn.Private,
	}
	if len(svcs) > 0 {
		ev.Services = serviceInfos(kp.Public, target, o.UDP, allow, svcs)
	}
	if conn.Private || o.Holesail {
		ev.Connection = conn.String()
	}
	env.out.emit(kp.Public.String(), ev)
	what := "key"
	switch {
	case conn.Private:
		env.out.text("private: " + conn.String())
		what = "secret"
	case o.Holesail:
		env.out.text("holesail: " + conn.String())
	}
	for _, s := range ev.Services {
		env.out.text(s.text())
	}
	switch {
	case created:
		env.out.text("new " + what + " saved in " + file + " (used again the next time this target is exposed)")
	case file != "" && !o.Key.given() && o.Secret.File == "":
		env.out.text(what + " from " + file)
	}
	access := "anyone who has the key (--allow or --private restrict it)"
	switch {
	case conn.Private:
		access = "holders of the private string"
	case len(allow) > 0 || len(perService) > 0:
		access = "the --allow lists"
	}
	env.logger.Info("exposing", "target", defTarget, "udp", defUDP, "services", len(ev.Services), "public_key", kp.Public.String(), "z32", kp.Public.Z32(), "open_to", access, "holesail", o.Holesail)
	env.ready("exposing " + defTarget + " as " + kp.Public.String())
	// A UDP service cannot be probed: it answers only what it
	// understands.
	if target != "" && !o.UDP {
		checkTarget(env, target)
	}
	for _, s := range svcs {
		if !s.UDP {
			checkTarget(env, s.Target)
		}
	}
	ex := tunnel.NewExposer(ln, target, tunnel.ExposeOptions{
		Allow:    tunnel.NewAllowList(allow...),
		Services: svcs,
		Budget:   budget,
		UDP:      o.UDP,
		Flows:    o.Flows,
		Logger:   env.logger,
		OnEvent:  env.onEvent(""),
	})
	defer env.reg.add(&regTunnel{name: defTarget, role: "expose", publicKey: kp.Public.String(), local: defTarget, udp: defUDP, stats: ex.Stats})()
	return runUntil(ctx, ex)
}

// keysOf lists the keys of a; nil for nil (everyone).
func keysOf(a tunnel.AllowList) []key.PublicKey {
	var out []key.PublicKey
	for k := range a {
		out = append(out, k)
	}
	return out
}

// runUntil runs s (an Exposer or Forwarder) until ctx ends, which is no
// error, or s's listener fails.
func runUntil(ctx context.Context, s interface {
	Done() <-chan struct{}
	Err() error
	Close() error
}) error {
	select {
	case <-ctx.Done():
	case <-s.Done():
	}
	s.Close()
	if ctx.Err() != nil {
		return nil
	}
	return s.Err()
}

// checkTarget warns when nothing listens at target yet; it is not fatal,
// since the service may start later.
func checkTarget(env *Env, target string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := tunnel.DialTarget(ctx, target)
	if err != nil {
		env.logger.Warn("the target does not accept connections (yet); peers will be turned away until it does", "target", target, "err", err)
		return
	}
	c.Close()
}
