// Command keytunnel exposes TCP services under Ed25519 public keys on the
// HyperDHT network and reaches them by key. The logic lives in
// internal/app; this file only wires flags to it.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/keytunnel/keytunnel/internal/app"
)

func main() {
	oneProc()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills at once.
	context.AfterFunc(ctx, stop)
	env := &app.Env{}
	err := newApp(env).RunContext(ctx, os.Args)
	stop()
	os.Exit(env.Fail(err))
}

// oneProc runs keytunnel on one P unless GOMAXPROCS says otherwise.
//
// Every packet through a tunnel is a chain of goroutine handoffs (socket
// reader, udx loop, secretstream reader, yamux's receive and send loops,
// the copy loops), each doing a few microseconds of work. With an idle P
// around, each handoff also wakes an idle OS thread that looks for work,
// finds none and sleeps again, and sysmon polls every 20 µs while any P is
// busy: on the 2-core development machine that doubled the context
// switches of a new connection through an established tunnel (expose and
// forward together: 37 → 21 per connection) and their CPU time (1.4 → 1.0
// ms), and made the connection 25% slower, while one stream's throughput
// was the same with one P as with two. One session's work is sequential
// anyway (one udx stream, one secretstream in each direction); a second P
// pays off only for a process carrying many busy sessions at once, which
// can set GOMAXPROCS.
func oneProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// newApp builds the command line. env's streams (nil: the process's) and
// test hooks are kept; the global flags fill the rest.
func newApp(env *app.Env) *cli.App {
	return &cli.App{
		Name:      "keytunnel",
		Usage:     "expose and reach TCP services by public key over HyperDHT",
		Writer:    orStdout(env),
		ErrWriter: orStderr(env),
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "bootstrap", Usage: "DHT bootstrap nodes as host:port (default: the public HyperDHT nodes)", EnvVars: []string{"KEYTUNNEL_BOOTSTRAP"}},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.BoolFlag{Name: "json", Usage: "print events as JSON objects, one a line (logs on stderr too)"},
			&cli.StringSliceFlag{Name: "relay-through", Usage: "blind-relay server key(s) to fall back to when holepunching fails (see `keytunnel relay`)", EnvVars: []string{"KEYTUNNEL_RELAY_THROUGH"}},
		}, relayFlags()...),
		Before: func(c *cli.Context) error {
			if err := env.Level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
			}
			env.LevelSet = c.IsSet("log-level")
			env.JSON = c.Bool("json")
			if c.IsSet("bootstrap") {
				env.Bootstrap = app.SplitList(c.StringSlice("bootstrap"))
			}
			if c.IsSet("relay-through") {
				keys, err := app.ParseRelayKeys(c.StringSlice("relay-through"))
				if err != nil {
					return err
				}
				env.RelayThrough = keys
			}
			if err := applyRelay(c, env); err != nil {
				return err
			}
			slog.SetDefault(env.Logger())
			return nil
		},
		Commands: []*cli.Command{
			keygenCommand(env),
			exposeCommand(env),
			forwardCommand(env),
			connectCommand(env),
			sshCommand(env),
			upCommand(env),
			testnetCommand(env),
			nodeCommand(env),
			relayCommand(env),
			dhtRelayCommand(env),
		},
	}
}

func keyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "key", Aliases: []string{"k"}, Usage: "seed file of the key pair (as `keytunnel keygen --out` writes)"},
		&cli.StringFlag{Name: "seed", Usage: "the key pair's seed as 64 hex characters"},
	}
}

// budgetFlags are expose's caps on what peers may take (tunnel.Budget);
// 0 means the default, which the usage line names.
func budgetFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "max-sessions", Usage: fmt.Sprintf("concurrent peer sessions (default %d)", app.DefaultBudget.Sessions)},
		&cli.IntFlag{Name: "max-streams-per-session", Usage: fmt.Sprintf("concurrent connections of one peer (default %d)", app.DefaultBudget.StreamsPerSession)},
		&cli.IntFlag{Name: "max-streams", Usage: fmt.Sprintf("concurrent connections of all peers (default %d)", app.DefaultBudget.Streams)},
		&cli.IntFlag{Name: "max-buffer-mib", Usage: fmt.Sprintf("MiB peers may make expose buffer for a slow target, all streams together (default %d)", app.DefaultBudget.MemoryMiB)},
	}
}

func budgetOptions(c *cli.Context) app.BudgetOptions {
	return app.BudgetOptions{
		Sessions: c.Int("max-sessions"), StreamsPerSession: c.Int("max-streams-per-session"),
		Streams: c.Int("max-streams"), MemoryMiB: c.Int("max-buffer-mib"),
	}
}

func keyOptions(c *cli.Context) app.KeyOptions {
	return app.KeyOptions{File: c.String("key"), Seed: c.String("seed")}
}

// args checks the number of positional arguments.
func args(c *cli.Context, min, max int) error {
	n := c.NArg()
	if n >= min && n <= max {
		return nil
	}
	for _, a := range c.Args().Slice() {
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("%s: options go before the arguments (usage: keytunnel %s %s)", c.Command.Name, c.Command.Name, c.Command.ArgsUsage)
		}
	}
	return fmt.Errorf("%s: wrong number of arguments (usage: keytunnel %s %s)", c.Command.Name, c.Command.Name, c.Command.ArgsUsage)
}

func keygenCommand(env *app.Env) *cli.Command {
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
			return app.Keygen(env, app.KeygenOptions{Out: c.String("out")})
		},
	}
}

func exposeCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "expose",
		Usage:     "serve a local TCP service under a public key (printed first)",
		ArgsUsage: "PORT|HOST:PORT",
		Flags: append(append(keyFlags(),
			&cli.StringSliceFlag{Name: "allow", Aliases: []string{"a"}, Usage: "only these client public keys may connect (repeatable)"},
		), budgetFlags()...),
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 1); err != nil {
				return err
			}
			return app.Expose(c.Context, env, app.ExposeOptions{
				Target: c.Args().First(), Key: keyOptions(c), Allow: c.StringSlice("allow"),
				Budget: budgetOptions(c),
			})
		},
	}
}

func forwardCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "forward",
		Usage:     "make the service behind a public key reachable on a local port",
		ArgsUsage: "KEY [PORT|HOST:PORT]",
		Flags: append(keyFlags(),
			&cli.BoolFlag{Name: "raw", Usage: "speak to a hypertele/holesail server (one peer connection per TCP connection)"},
		),
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 2); err != nil {
				return err
			}
			listen := "0"
			if c.NArg() == 2 {
				listen = c.Args().Get(1)
			}
			return app.Forward(c.Context, env, app.ForwardOptions{
				Remote: c.Args().First(), Listen: listen, Key: keyOptions(c), Raw: c.Bool("raw"),
			})
		},
	}
}

func connectCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "connect",
		Usage:     "join stdin/stdout to the service behind a public key (ssh ProxyCommand)",
		ArgsUsage: "KEY",
		Flags: append(keyFlags(),
			&cli.BoolFlag{Name: "raw", Usage: "speak to a hypertele/holesail server"},
		),
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 1); err != nil {
				return err
			}
			return app.Connect(c.Context, env, app.ConnectOptions{
				Remote: c.Args().First(), Key: keyOptions(c), Raw: c.Bool("raw"),
			})
		},
	}
}

func sshCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "ssh",
		Usage:     "run ssh through keytunnel connect: keytunnel ssh [--key FILE] [ssh options] user@KEY",
		ArgsUsage: "[--key FILE|--seed HEX] [--raw] [ssh options] [user@]KEY [command]",
		// ssh's own options (-p, -L, ...) must reach ssh untouched;
		// app.ParseSSHArgs takes keytunnel's from the front.
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			o, err := app.ParseSSHArgs(c.Args().Slice())
			if err != nil {
				return err
			}
			return app.SSH(c.Context, env, o)
		},
	}
}

func upCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "run every [[expose]] and [[forward]] of a TOML file; SIGHUP reloads it",
		Flags: append(keyFlags(),
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Required: true, Usage: "the TOML file"},
		),
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			return app.Up(c.Context, env, app.UpOptions{ConfigFile: c.String("config"), Key: keyOptions(c)})
		},
	}
}

func testnetCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:  "testnet",
		Usage: "run a local DHT and print its --bootstrap value",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Aliases: []string{"n"}, Value: 3, Usage: "number of nodes"},
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Usage: "UDP port of the bootstrap node (default: any free port)"},
			&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "IPv4 address the nodes bind"},
		},
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			return app.Testnet(c.Context, env, app.TestnetOptions{Nodes: c.Int("nodes"), Port: c.Int("port"), Host: c.String("host")})
		},
	}
}

func nodeCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "run a persistent DHT node (serves the network; can bootstrap others)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Usage: "UDP port (default: any free port)"},
		},
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			return app.Node(c.Context, env, app.NodeOptions{Port: c.Int("port")})
		},
	}
}

func orStdout(env *app.Env) io.Writer {
	if env.Stdout != nil {
		return env.Stdout
	}
	return os.Stdout
}

func orStderr(env *app.Env) io.Writer {
	if env.Stderr != nil {
		return env.Stderr
	}
	return os.Stderr
}
