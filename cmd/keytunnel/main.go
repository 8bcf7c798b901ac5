// Command keytunnel exposes TCP services under Ed25519 public keys on the
// HyperDHT network and reaches them by key. The logic lives in the
// library packages; this file only wires flags to them.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/keytunnel/keytunnel/internal/key"
)

func main() {
	if err := newApp(os.Stdout, os.Stderr).Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "keytunnel:", err)
		os.Exit(1)
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "keytunnel",
		Usage:     "expose and reach TCP services by public key over HyperDHT",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "bootstrap", Usage: "DHT bootstrap nodes as host:port (default: the public HyperDHT nodes)", EnvVars: []string{"KEYTUNNEL_BOOTSTRAP"}},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.BoolFlag{Name: "json", Usage: "print events as JSON objects, one a line"},
		},
		Before: func(c *cli.Context) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
			}
			opts := &slog.HandlerOptions{Level: lvl}
			var h slog.Handler = slog.NewTextHandler(stderr, opts)
			if c.Bool("json") {
				h = slog.NewJSONHandler(stdout, opts)
			}
			slog.SetDefault(slog.New(h))
			return nil
		},
		Commands: []*cli.Command{
			keygenCommand(),
		},
	}
}

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "create a key pair, save its seed (mode 0600) and print the public key",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "seed file to write (default: print the seed instead)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("keygen takes no arguments (got %q)", c.Args().First())
			}
			kp, err := key.Generate(nil)
			if err != nil {
				return err
			}
			out := c.String("out")
			if out == "" {
				seed := kp.Seed()
				fmt.Fprintf(c.App.Writer, "%s\nseed %x\n", kp.Public, seed[:])
				return nil
			}
			if err := key.WriteSeedFile(out, kp.Seed()); err != nil {
				if errors.Is(err, key.ErrExists) {
					return fmt.Errorf("%s exists; not overwriting a key", out)
				}
				return err
			}
			abs, _ := filepath.Abs(out)
			fmt.Fprintln(c.App.Writer, kp.Public)
			slog.Info("seed saved", "file", abs, "public_key", kp.Public.String())
			return nil
		},
	}
}
