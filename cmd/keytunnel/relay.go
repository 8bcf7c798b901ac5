package main

import (
	"github.com/keytunnel/keytunnel/internal/app"
	"github.com/urfave/cli/v2"
)

func relayCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "relay",
		Usage:     "run a blind-relay server for peers that cannot holepunch (use its key with --relay-through)",
		ArgsUsage: " ",
		Flags: append(keyFlags(),
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Usage: "UDP `PORT` of the node", DefaultText: "any free port"},
		),
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			return app.Relay(c.Context, env, app.RelayOptions{Key: keyOptions(c), Port: c.Int("port")})
		},
	}
}
