package app

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/keytunnel/keytunnel/tunnel"
)

// ExposeOptions are expose's arguments.
type ExposeOptions struct {
	Target string // PORT (on 127.0.0.1) or HOST:PORT
	Key    KeyOptions
	Allow  []string // public keys (hex or z32), each may be comma-separated
	Budget BudgetOptions
	UDP    bool // the target is a UDP service
	Flows  tunnel.FlowOptions
}

// Expose serves the TCP service at o.Target under a key pair until ctx
// ends. The first stdout line is the public key (in JSON mode, the
// "listening" event carrying it); it is printed once the key is announced.
// Without --key or --seed, the key is the one saved for this target by an
// earlier run, or a new one saved for the next.
func Expose(ctx context.Context, env *Env, o ExposeOptions) error {
	env.init()
	target, err := hostPort("target", o.Target, false)
	if err != nil {
		return err
	}
	allow, err := parseAllow(o.Allow)
	if err != nil {
		return err
	}
	budget, err := o.Budget.budget()
	if err != nil {
		return err
	}
	kp, file, created, err := env.exposeKey(o.Key, target, o.UDP)
	if err != nil {
		return err
	}
	defer env.ignoreHangup("expose")()
	nw, err := env.openNetwork(ctx)
	if err != nil {
		return err
	}
	defer nw.Close()
	ln, err := nw.Listen(ctx, kp, tunnel.NewAllowList(allow...), nil)
	if err != nil {
		return fmt.Errorf("announcing %s on the DHT: %w", kp.Public, err)
	}
	env.out.emit(kp.Public.String(), Event{
		Event: EvListening, PublicKey: kp.Public.String(), PublicKeyZ32: kp.Public.Z32(), Target: target, UDP: o.UDP,
		KeyFile: file, Created: created,
	})
	switch {
	case created:
		env.out.text("new key saved in " + file + " (used again the next time this target is exposed)")
	case file != "" && !o.Key.given():
		env.out.text("key from " + file)
	}
	env.logger.Info("exposing", "target", target, "udp", o.UDP, "public_key", kp.Public.String(), "z32", kp.Public.Z32(), "allow", len(allow))
	if !o.UDP {
		// A UDP service cannot be probed: it answers only what it
		// understands.
		checkTarget(env, target)
	}
	err = tunnel.Expose(ctx, ln, target, tunnel.ExposeOptions{
		Allow:   tunnel.NewAllowList(allow...),
		Budget:  budget,
		UDP:     o.UDP,
		Flows:   o.Flows,
		Logger:  env.logger,
		OnEvent: env.onEvent(""),
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// checkTarget warns when nothing listens at target yet; it is not fatal,
// since the service may start later.
func checkTarget(env *Env, target string) {
	c, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		env.logger.Warn("the target does not accept connections (yet); peers will be turned away until it does", "target", target, "err", err)
		return
	}
	c.Close()
}
