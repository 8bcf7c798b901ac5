package main

import (
	"github.com/urfave/cli/v2"

	"github.com/keytunnel/keytunnel/internal/app"
	"github.com/keytunnel/keytunnel/relay/blindrelay"
)

func relayCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "relay",
		Usage:     "run a blind-relay server for peers that cannot holepunch (use its key with --relay-through)",
		ArgsUsage: " ",
		Flags: append(keyFlags(),
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Usage: "UDP `PORT` of the node", DefaultText: "any free port"},
			&cli.IntFlag{Name: "max-sessions", Value: blindrelay.DefaultMaxSessions, Usage: "at most `N` peer connections at once; each relayed connection takes two"},
			&cli.IntFlag{Name: "max-sessions-per-source", Value: blindrelay.DefaultMaxSessionsPerSource, Usage: "at most `N` peer connections at once from one IPv4 address or IPv6 /64"},
			&cli.DurationFlag{Name: "first-message-timeout", Value: blindrelay.DefaultFirstMessageTimeout, Usage: "close a peer connection that has not asked for a pairing within `DURATION`"},
		),
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			return app.Relay(c.Context, env, app.RelayOptions{
				Key: keyOptions(c), Port: c.Int("port"),
				MaxSessions: c.Int("max-sessions"), MaxSessionsPerSource: c.Int("max-sessions-per-source"),
				FirstMessageTimeout: c.Duration("first-message-timeout"),
			})
		},
	}
}
