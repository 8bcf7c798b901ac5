package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/keytunnel/keytunnel/config"
	"github.com/keytunnel/keytunnel/internal/holesail"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/sdnotify"
	"github.com/keytunnel/keytunnel/internal/stack"
	"github.com/keytunnel/keytunnel/tunnel"
)

// UpOptions are up's arguments.
type UpOptions struct {
	ConfigFile string
	// Key is the identity the forwards dial with (what an exposing peer's
	// allow list names); none means a random one per run.
	Key KeyOptions
	// KeyDir is where the file's relative key paths point; empty means
	// $STATE_DIRECTORY (which systemd's StateDirectory= sets), else the
	// file's directory.
	KeyDir string
}

// StateDirEnv is what systemd sets to a unit's StateDirectory (several
// are separated by colons; up takes the first).
const StateDirEnv = "STATE_DIRECTORY"

func (o UpOptions) configOptions() config.Options {
	dir := o.KeyDir
	if dir == "" {
		dir, _, _ = strings.Cut(os.Getenv(StateDirEnv), ":")
	}
	return config.Options{KeyDir: dir}
}

// Up runs every [[expose]] and [[forward]] entry of a configuration file
// until ctx ends. Nothing starts unless every entry can: the file must be
// valid, every forward's port free and every expose's key announced. A
// reload request (SIGHUP) reads the file again and applies config.Diff:
// added and changed entries start, removed and changed ones stop, the rest
// keep running with their connections. An invalid file or a taken port
// leaves everything as it was.
func Up(ctx context.Context, env *Env, o UpOptions) error {
	env.init()
	if o.ConfigFile == "" {
		return errors.New("up needs a configuration file: keytunnel up -c FILE")
	}
	copts := o.configOptions()
	cfg, err := copts.Load(o.ConfigFile)
	if err != nil {
		return err
	}
	id, err := env.loadKey(o.Key)
	if err != nil {
		return err
	}
	if len(cfg.Expose)+len(cfg.Forward) == 0 {
		return fmt.Errorf("%s: no [[expose]] or [[forward]] entries", o.ConfigFile)
	}
	if !env.LevelSet {
		env.setLevel(cfg.LogLevel)
	}
	if len(env.RelayThrough) == 0 {
		env.RelayThrough = cfg.RelayThrough
	}
	if env.Bootstrap == nil && len(cfg.Bootstrap) > 0 {
		env.Bootstrap = cfg.Bootstrap
	}

	// Start a reload listener before anything runs, so that an early
	// SIGHUP does not kill the process.
	reload := env.Reload
	if reload == nil {
		ch := make(chan struct{}, 1)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		defer signal.Stop(sig)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-sig:
					select {
					case ch <- struct{}{}:
					default:
					}
				case <-stop:
					return
				}
			}
		}()
		reload = ch
	}

	lns, err := env.bindForwards(cfg.Forward, nil)
	if err != nil {
		return err
	}
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	stop, err := env.observe("up")
	if err != nil {
		closeAll()
		return err
	}
	defer stop()
	nw, err := env.openNetwork(ctx)
	if err != nil {
		closeAll()
		return err
	}
	defer nw.Close()
	env.reg.setNetwork(nw)
	r := &runner{env: env, nw: nw, path: o.ConfigFile, copts: copts, id: id,
		exposes: map[string]*runningExpose{}, forwards: map[string]*runningForward{}}
	defer r.stopAll()
	pls := make([]tunnel.PeerListener, len(cfg.Expose))
	for i, e := range cfg.Expose {
		pl, err := nw.Listen(ctx, e.KeyPair, env.listenOptions(e.Name, e.KeyPair.Public, e.SessionAllow(), e.Relay.Override(), e.Replace))
		if err != nil {
			closeAll()
			for _, pl := range pls[:i] {
				pl.Close()
			}
			return fmt.Errorf("expose %q: %w", e.Name, announceError(e.KeyPair.Public, err))
		}
		pls[i] = pl
	}
	for i, e := range cfg.Expose {
		r.startExpose(ctx, e, pls[i])
	}
	for i, f := range cfg.Forward {
		r.startForward(f, lns[i])
	}
	env.logger.Info("up", "file", o.ConfigFile, "key_dir", copts.KeyDir, "expose", len(cfg.Expose), "forward", len(cfg.Forward))
	// Under systemd (Type=notify), the unit is started only now: every
	// entry is announced or listening.
	r.env.notify(sdnotify.Ready(r.status()))
	for {
		select {
		case <-ctx.Done():
			r.env.notify(sdnotify.Stopping())
			return nil
		case <-reload:
			r.env.notify(sdnotify.Reloading())
			r.reload(ctx)
			r.env.notify(sdnotify.Ready(r.status()))
		}
	}
}

// status is the line `systemctl status` shows.
func (r *runner) status() string {
	return fmt.Sprintf("%d expose, %d forward entries from %s", len(r.exposes), len(r.forwards), r.path)
}

type runningExpose struct {
	cfg        config.Expose
	ex         *tunnel.Exposer
	record     func() // stops publishing its holesail record; nil if none
	unregister func()
}

func (e *runningExpose) close() {
	e.ex.Close()
	e.unregister()
	if e.record != nil {
		e.record()
	}
}

type runningForward struct {
	cfg        config.Forward
	fw         forwarder
	unregister func()
}

type runner struct {
	env      *Env
	nw       Network
	path     string
	copts    config.Options
	id       key.KeyPair
	exposes  map[string]*runningExpose
	forwards map[string]*runningForward
}

// listenKey names a forward's local socket: a UDP and a TCP forward may
// share a port number.
func listenKey(f config.Forward) string {
	if f.UDP {
		return "udp " + f.Listen
	}
	return f.Listen
}

// bindForwards opens every forward's port, or none: on an error it closes
// what it opened. Entries whose listenKey is in reuse get a nil listener
// (their port is still held by an entry about to stop).
func (e *Env) bindForwards(fs []config.Forward, reuse map[string]bool) ([]io.Closer, error) {
	lns := make([]io.Closer, len(fs))
	for i, f := range fs {
		if reuse[listenKey(f)] {
			continue
		}
		ln, err := e.listenLocal(f.Listen, f.UDP)
		if err != nil {
			for _, ln := range lns[:i] {
				if ln != nil {
					ln.Close()
				}
			}
			return nil, fmt.Errorf("forward %q: %w", f.Name, err)
		}
		lns[i] = ln
	}
	return lns, nil
}

func (r *runner) startExpose(ctx context.Context, e config.Expose, pl tunnel.PeerListener) {
	ex := tunnel.NewExposer(pl, e.Target, tunnel.ExposeOptions{
		Allow:    tunnel.NewAllowList(e.Allow...),
		Services: e.Services,
		Budget:   e.Budget,
		UDP:      e.UDP,
		Flows:    e.Flows,
		Logger:   r.env.logger.With("entry", e.Name),
		OnEvent:  r.env.onEvent(e.Name),
	})
	target, udp := e.Default()
	unregister := r.env.reg.add(&regTunnel{name: e.Name, role: "expose", publicKey: e.KeyPair.Public.String(), local: target, udp: udp, stats: ex.Stats})
	re := &runningExpose{cfg: e, ex: ex, unregister: unregister}
	r.exposes[e.Name] = re
	ev := Event{
		Event: EvListening, Entry: e.Name, PublicKey: e.KeyPair.Public.String(), Target: target, KeyFile: e.KeyFile,
		Private: e.Private, UDP: udp,
	}
	if len(e.Services) > 0 {
		ev.Services = serviceInfos(e.KeyPair.Public, e.Target, e.UDP, e.Allow, e.Services)
	}
	text := fmt.Sprintf("%s: exposing %s as %s", e.Name, target, e.KeyPair.Public)
	for _, s := range ev.Services {
		text += "\n" + e.Name + ": " + s.text()
	}
	switch {
	case e.Private:
		// The private string stays in its file: up's output often goes
		// to a journal.
		text += " (private: the string in " + e.KeyFile + ")"
	case e.Holesail:
		ev.Connection = holesail.Public(e.KeyPair.Public).String()
		text += " (holesail: " + ev.Connection + ")"
	}
	if e.Holesail || e.Private {
		stop, err := r.env.publishRecord(ctx, r.nw, e.KeyPair, recordFor(target, udp), e.Name)
		if err != nil && e.Holesail {
			r.env.logger.Warn("no holesail record", "entry", e.Name, "err", err)
		}
		re.record = stop
	}
	r.env.out.emit(text, ev)
}

func (r *runner) startForward(f config.Forward, sock io.Closer) {
	id := r.id
	if !f.KeyPair.Public.IsZero() {
		id = f.KeyPair // a private service admits only its own key pair
	}
	opts := tunnel.ForwardOptions{
		Raw:     f.Raw,
		Service: f.Service,
		Flows:   f.Flows,
		Logger:  r.env.logger.With("entry", f.Name),
		OnEvent: r.env.onEvent(f.Name),
	}
	fw := newForwarder(r.nw.Dialer(id, f.Relay.Override()), f.Key, sock, opts)
	local, what := localAddr(sock)
	unregister := r.env.reg.add(&regTunnel{name: f.Name, role: "forward", remote: f.Key.String(), service: f.Service, local: local, udp: f.UDP, stats: fw.Stats})
	r.forwards[f.Name] = &runningForward{cfg: f, fw: fw, unregister: unregister}
	r.env.out.emit(fmt.Sprintf("%s: forwarding %s%s to %s", f.Name, what, local, withService(f.Key, f.Service)), Event{
		Event: EvForwarding, Entry: f.Name, Listen: local, Remote: f.Key.String(), Service: f.Service, UDP: f.UDP,
	})
}

func (r *runner) stopExpose(name string) {
	if e, ok := r.exposes[name]; ok {
		e.close()
		delete(r.exposes, name)
		r.env.out.emit(name+": stopped", Event{Event: EvStopped, Entry: name})
	}
}

func (r *runner) stopForward(name string) {
	if f, ok := r.forwards[name]; ok {
		f.fw.Close()
		f.unregister()
		delete(r.forwards, name)
		r.env.out.emit(name+": stopped", Event{Event: EvStopped, Entry: name})
	}
}

func (r *runner) stopAll() {
	for name, e := range r.exposes {
		e.close()
		delete(r.exposes, name)
	}
	for name, f := range r.forwards {
		f.fw.Close()
		f.unregister()
		delete(r.forwards, name)
	}
}

// running is the configuration of the entries that still run; one whose
// listener failed counts as absent, so that a reload starts it again.
func (r *runner) running() *config.File {
	f := &config.File{}
	for _, e := range r.exposes {
		if !closed(e.ex.Done()) {
			f.Expose = append(f.Expose, e.cfg)
		}
	}
	for _, fw := range r.forwards {
		if !closed(fw.fw.Done()) {
			f.Forward = append(f.Forward, fw.cfg)
		}
	}
	return f
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// reload applies the file's current content; see Up.
func (r *runner) reload(ctx context.Context) {
	log := r.env.logger
	fail := func(err error) {
		log.Error("reload failed; the running entries are unchanged", "file", r.path, "err", err)
		r.env.out.emit("reload failed: "+err.Error(), Event{Event: EvReloadErr, Error: err.Error()})
	}
	cfg, err := r.copts.Load(r.path)
	if err != nil {
		fail(err)
		return
	}
	cur := r.running()
	ch := config.Diff(cur, cfg)
	if !slices.Equal(cfg.Bootstrap, r.env.Bootstrap) && len(cfg.Bootstrap) > 0 {
		log.Warn("bootstrap changes take effect on restart")
	}
	// Ports of stopping forwards are free for the new entries only after
	// the stop; every other new port must be free now, or nothing changes.
	freed := map[string]bool{}
	for _, f := range ch.StopForward {
		freed[listenKey(f)] = true
	}
	lns, err := r.env.bindForwards(ch.StartForward, freed)
	if err != nil {
		fail(err)
		return
	}
	for _, e := range ch.StopExpose {
		r.stopExpose(e.Name)
	}
	for _, f := range ch.StopForward {
		r.stopForward(f.Name)
	}
	// Entries that died (absent from cur) but are still in the maps.
	for name, e := range r.exposes {
		if closed(e.ex.Done()) {
			r.stopExpose(name)
		}
	}
	for name, f := range r.forwards {
		if closed(f.fw.Done()) {
			r.stopForward(name)
		}
	}
	var failed, started []string
	for i, f := range ch.StartForward {
		ln := lns[i]
		if ln == nil {
			if ln, err = r.env.listenLocal(f.Listen, f.UDP); err != nil {
				log.Error("entry not started", "entry", f.Name, "err", err)
				r.env.out.emit(fmt.Sprintf("%s: not started: %v", f.Name, err), Event{Event: "error", Entry: f.Name, Error: err.Error()})
				failed = append(failed, f.Name)
				continue
			}
		}
		r.startForward(f, ln)
		started = append(started, f.Name)
	}
	for _, e := range ch.StartExpose {
		pl, err := r.nw.Listen(ctx, e.KeyPair, r.env.listenOptions(e.Name, e.KeyPair.Public, e.SessionAllow(), e.Relay.Override(), e.Replace))
		if err != nil {
			err = announceError(e.KeyPair.Public, err)
			log.Error("entry not started", "entry", e.Name, "err", err)
			r.env.out.emit(fmt.Sprintf("%s: not started: %v", e.Name, err), Event{Event: "error", Entry: e.Name, Error: err.Error()})
			failed = append(failed, e.Name)
			continue
		}
		r.startExpose(ctx, e, pl)
		started = append(started, e.Name)
	}
	var stopped []string
	for _, e := range ch.StopExpose {
		stopped = append(stopped, e.Name)
	}
	for _, f := range ch.StopForward {
		stopped = append(stopped, f.Name)
	}
	log.Info("reloaded", "file", r.path, "started", started, "stopped", stopped, "kept", ch.Kept, "failed", failed)
	r.env.out.emit(fmt.Sprintf("reloaded %s: %d started, %d stopped, %d kept, %d failed", r.path, len(started), len(stopped), len(ch.Kept), len(failed)),
		Event{Event: EvReloaded, Started: started, Stopped: stopped, Kept: ch.Kept, Failed: failed})
}

// announceError says why an entry's key was not announced.
func announceError(pub key.PublicKey, err error) error {
	if errors.Is(err, stack.ErrServed) {
		return fmt.Errorf("%s is already served by another running process (a keytunnel expose or up with this key, here or elsewhere); stop that one, or set replace = true in this entry to take the key over", pub)
	}
	return fmt.Errorf("announcing %s on the DHT: %w", pub, err)
}
