package main

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/keytunnel/keytunnel/internal/app"
)

// relayFlags are the global --relay (reach the DHT through a dht-relay
// instead of UDP) and --relay-noncustodial.
func relayFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "relay", Usage: "reach the DHT through the dht-relay at `URL` (tcp://HOST:PORT or ws://HOST:PORT) instead of UDP; the relay holds your keys unless --relay-noncustodial", EnvVars: []string{"KEYTUNNEL_RELAY"}},
		&cli.BoolFlag{Name: "relay-noncustodial", Usage: "with --relay: keep your keys (handshakes and signatures run here, the relay sees only ciphertext); needs keytunnel's dht-relay to expose or listen", EnvVars: []string{"KEYTUNNEL_RELAY_NONCUSTODIAL"}, DisableDefaultText: true},
	}
}

// applyRelay sets the network hook when --relay is given.
func applyRelay(c *cli.Context, env *app.Env) error {
	if !c.IsSet("relay") {
		if c.Bool("relay-noncustodial") {
			return errors.New("--relay-noncustodial needs --relay")
		}
		return nil
	}
	open, err := app.RelayNetwork(c.String("relay"), app.DHTRelayClientOptions{NonCustodial: c.Bool("relay-noncustodial")})
	if err != nil {
		return err
	}
	env.OpenNetwork = open
	return nil
}

func dhtRelayCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:  "dht-relay",
		Usage: "relay the DHT to clients without UDP (@hyperswarm/dht-relay over TCP or WebSocket)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: 49443, Usage: "TCP `PORT`"},
			&cli.StringFlag{Name: "host", Usage: "`ADDRESS` to bind", DefaultText: "all interfaces"},
			&cli.BoolFlag{Name: "ws", Usage: "WebSocket transport (as the reference's relay) instead of TCP", DisableDefaultText: true},
			&cli.BoolFlag{Name: "behind-proxy", Usage: "log client addresses from X-Forwarded-For", DisableDefaultText: true},
		},
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			return app.DHTRelay(c.Context, env, app.DHTRelayOptions{
				Port: c.Int("port"), Host: c.String("host"), WS: c.Bool("ws"), BehindProxy: c.Bool("behind-proxy"),
			})
		},
	}
}
