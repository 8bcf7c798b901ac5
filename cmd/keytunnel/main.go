// Command keytunnel exposes TCP services under Ed25519 public keys on the
// HyperDHT network and reaches them by key. The logic lives in
// internal/app; this file only wires flags to it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/keytunnel/keytunnel/internal/app"
	"github.com/keytunnel/keytunnel/tunnel"
)

func main() {
	oneProc()
	gcPercent()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills at once.
	context.AfterFunc(ctx, stop)
	env := &app.Env{}
	err := newApp(env).RunContext(ctx, os.Args)
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil // Ctrl-C or SIGTERM before the command got going: no complaint
	}
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

// gcPercent collects garbage at 50% heap growth rather than Go's 100%,
// unless GOGC says otherwise.
//
// A tunnel's live heap is mostly the data it buffers for readers slower
// than their peers: stream windows, up to 16 MiB per session, which the
// memory budget counts. At 100% the heap may reach twice that before a
// collection, and the process's peak RSS was what varied: exposing to a
// 40 MB/s reader, peak RSS was 48.8-63.4 MB in six runs (once 72.8), the
// live heap 14-20 MB. At 50% it was 39.8-47.4 MB, and forward's 34-37 MB
// rather than 39-45. The data path allocates little (its buffers are
// pooled), so the collections cost nothing measurable: a 1 GiB loopback
// stream ran at 326-339 MB/s and 2.1-2.2 CPU s/GiB either way.
func gcPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
}

// newApp builds the command line. env's streams (nil: the process's) and
// test hooks are kept; the global flags fill the rest.
func newApp(env *app.Env) *cli.App {
	ver, _, _ := buildVersion()
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version and exit", DisableDefaultText: true}
	cli.VersionPrinter = func(c *cli.Context) { printVersion(c.App.Writer) }
	a := &cli.App{
		Name:      "keytunnel",
		Version:   ver,
		Usage:     "expose and reach TCP services by public key over HyperDHT",
		Writer:    orStdout(env),
		ErrWriter: orStderr(env),
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "bootstrap", Usage: "DHT bootstrap nodes as `HOST:PORT`, comma-separated or repeated", DefaultText: "the public HyperDHT nodes", EnvVars: []string{"KEYTUNNEL_BOOTSTRAP"}},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`LEVEL` of logs on stderr: debug, info, warn or error"},
			&cli.BoolFlag{Name: "json", Usage: "print events as JSON objects, one a line (logs on stderr too)", DisableDefaultText: true},
			&cli.StringSliceFlag{Name: "relay-through", Usage: "public `KEY` of a blind relay (keytunnel relay) to fall back to when holepunching fails; repeatable", EnvVars: []string{"KEYTUNNEL_RELAY_THROUGH"}},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at http://`ADDR`/metrics (HOST:PORT, or PORT on 127.0.0.1; port 0 picks one, logged) from expose, forward, connect, up, node, relay, dht-relay and testnet"},
		}, relayFlags()...),
		Before: func(c *cli.Context) error {
			if err := env.Level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
			}
			env.LevelSet = c.IsSet("log-level")
			env.JSON = c.Bool("json")
			env.Metrics = c.String("metrics")
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
			keyCommand(env),
			exposeCommand(env),
			forwardCommand(env),
			connectCommand(env),
			sshCommand(env),
			upCommand(env),
			statusCommand(env),
			testnetCommand(env),
			nodeCommand(env),
			relayCommand(env),
			dhtRelayCommand(env),
			doctorCommand(env),
			versionCommand(),
			completionCommand(),
		},
	}
	setupHelp(a)
	return a
}

func keyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "key", Aliases: []string{"k"}, Usage: "`FILE` holding the key pair's seed (keytunnel keygen --out FILE writes one)"},
		&cli.StringFlag{Name: "seed-file", Usage: "read the seed (64 hex characters) from `FILE`, or from stdin if FILE is -"},
		&cli.StringFlag{Name: "seed", Usage: "the key pair's seed as 64 `HEX` characters; other users can see it (ps), prefer --key, --seed-file or $" + app.SeedEnvVar},
	}
}

// budgetFlags are expose's caps on what peers may take (tunnel.Budget),
// with the defaults as values so that help shows them.
func budgetFlags() []cli.Flag {
	b := app.DefaultBudget
	return []cli.Flag{
		&cli.IntFlag{Name: "max-sessions", Value: b.Sessions, Usage: "at most `N` concurrent peer sessions"},
		&cli.IntFlag{Name: "max-streams-per-session", Value: b.StreamsPerSession, Usage: "at most `N` concurrent connections of one peer"},
		&cli.IntFlag{Name: "max-streams", Value: b.Streams, Usage: "at most `N` concurrent connections of all peers"},
		&cli.IntFlag{Name: "max-buffer-mib", Value: b.MemoryMiB, Usage: "at most `N` MiB that peers may make expose buffer for a slow target, all connections together"},
	}
}

func budgetOptions(c *cli.Context) app.BudgetOptions {
	return app.BudgetOptions{
		Sessions: c.Int("max-sessions"), StreamsPerSession: c.Int("max-streams-per-session"),
		Streams: c.Int("max-streams"), MemoryMiB: c.Int("max-buffer-mib"),
	}
}

// udpFlags are expose's and forward's UDP mode and its flow settings,
// with the defaults as values so that help shows them.
func udpFlags(what string) []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "udp", Usage: what, DisableDefaultText: true},
		&cli.DurationFlag{Name: "udp-idle-timeout", Value: tunnel.DefaultFlowIdleTimeout, Usage: "with --udp: drop a client's flow after `DURATION` without a datagram"},
		&cli.IntFlag{Name: "max-flows", Value: tunnel.DefaultMaxFlows, Usage: "with --udp: at most `N` flows (client addresses) at once"},
	}
}

// flowOptions reads udpFlags; the flow flags without --udp are an error,
// since they would do nothing.
func flowOptions(c *cli.Context) (tunnel.FlowOptions, error) {
	if !c.Bool("udp") {
		for _, f := range []string{"udp-idle-timeout", "max-flows"} {
			if c.IsSet(f) {
				return tunnel.FlowOptions{}, fmt.Errorf("%s: --%s applies only with --udp", c.Command.Name, f)
			}
		}
	}
	if d := c.Duration("udp-idle-timeout"); d < 10*time.Millisecond {
		return tunnel.FlowOptions{}, fmt.Errorf("%s: --udp-idle-timeout %v: want at least 10ms (such as 60s)", c.Command.Name, d)
	}
	if n := c.Int("max-flows"); n < 1 || n > 1<<20 {
		return tunnel.FlowOptions{}, fmt.Errorf("%s: --max-flows %d: want 1 to %d", c.Command.Name, n, 1<<20)
	}
	return tunnel.FlowOptions{IdleTimeout: c.Duration("udp-idle-timeout"), MaxFlows: c.Int("max-flows")}, nil
}

// secretFlags name a private connection string (holesail's secure mode).
func secretFlags(what string) []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "private", Usage: what, DisableDefaultText: true},
		&cli.StringFlag{Name: "secret-file", Usage: "read the private connection string (hs://s000…) or secret from `FILE`, or from stdin if FILE is -; also $" + app.SecretEnvVar},
	}
}

func secretOptions(c *cli.Context) app.SecretOptions {
	return app.SecretOptions{Private: c.Bool("private"), File: c.String("secret-file"), Env: os.Getenv(app.SecretEnvVar)}
}

// keyArgs is how many arguments name the service at least: none when
// the private string comes from --secret-file or $KEYTUNNEL_SECRET.
func keyArgs(o app.SecretOptions) int {
	if o.File != "" || o.Env != "" {
		return 0
	}
	return 1
}

// remoteArgs splits forward's KEY [PORT]: with the private string in
// --secret-file or $KEYTUNNEL_SECRET, a lone argument that is a port
// rather than a key is the port.
func remoteArgs(c *cli.Context, o app.SecretOptions) (remote, listen string) {
	remote, listen = c.Args().Get(0), c.Args().Get(1)
	if c.NArg() == 1 && (o.File != "" || o.Env != "") && app.IsListenAddress(remote) {
		return "", remote
	}
	return remote, listen
}

func keyOptions(c *cli.Context) app.KeyOptions {
	return app.KeyOptions{File: c.String("key"), Seed: c.String("seed"), SeedFile: c.String("seed-file"), SeedEnv: os.Getenv(app.SeedEnvVar)}
}

// args checks the number of positional arguments.
func args(c *cli.Context, min, max int) error {
	n := c.NArg()
	if n >= min && n <= max {
		return nil
	}
	for _, a := range c.Args().Slice() {
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("%s: options go before the arguments (usage: keytunnel %s %s)", c.Command.Name, c.Command.FullName(), c.Command.ArgsUsage)
		}
	}
	return fmt.Errorf("%s: wrong number of arguments (usage: keytunnel %s %s)", c.Command.Name, c.Command.FullName(), c.Command.ArgsUsage)
}

func keygenCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "create a key pair, save its seed (mode 0600) and print the public key",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "seed `FILE` to write, mode 0600", DefaultText: "print the seed instead"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("keygen takes no arguments (got %q)", c.Args().First())
			}
			return app.Keygen(env, app.KeygenOptions{Out: c.String("out")})
		},
	}
}

// keyCommand is `key show FILE`, one command with the verb as its first
// argument: urfave/cli's `help key` cannot list subcommands.
func keyCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "key",
		Usage:     "print the public key of a seed file (- reads the seed from stdin) in hex and z32",
		ArgsUsage: "show FILE|-",
		Action: func(c *cli.Context) error {
			if err := args(c, 2, 2); err != nil {
				return err
			}
			if c.Args().First() != "show" {
				return fmt.Errorf("key: unknown verb %q (usage: keytunnel key show FILE|-)", c.Args().First())
			}
			return app.KeyShow(env, c.Args().Get(1))
		},
	}
}

func exposeCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "expose",
		Usage:     "serve a local TCP service under a public key (printed first)",
		ArgsUsage: "PORT|HOST:PORT|unix:PATH",
		Flags: append(append(append(append(keyFlags(),
			&cli.StringSliceFlag{Name: "allow", Aliases: []string{"a"}, Usage: "only clients with this public `KEY` may connect (to every service; NAME=KEY: to the service NAME alone); repeatable"},
			&cli.StringSliceFlag{Name: "service", Aliases: []string{"s"}, Usage: "also serve a named `SERVICE` under the key, given as NAME=TARGET (TARGET: PORT, HOST:PORT, unix:PATH, or udp:PORT for a UDP service); clients reach it with forward KEY/NAME; repeatable; without PORT the first is the default service"},
			&cli.BoolFlag{Name: "replace", Usage: "take the key over from another running process that serves it (new clients then reach this one); without it expose refuses to start", DisableDefaultText: true},
			&cli.BoolFlag{Name: "holesail", Usage: "publish holesail's DHT record (port, protocol) for holesail clients and print the holesail connection string", DisableDefaultText: true},
		), secretFlags("serve under a key pair derived from a secret and admit only clients holding it (holesail's secure mode); prints the private connection string")...), budgetFlags()...),
			udpFlags("the service is a UDP one (DNS, a game, WireGuard): peers reach it with forward --udp, or holesail's UDP client")...),
		Action: func(c *cli.Context) error {
			svcs := c.StringSlice("service")
			minArgs := 1
			if len(svcs) > 0 {
				minArgs = 0 // the first service is the default
			}
			if err := args(c, minArgs, 1); err != nil {
				return err
			}
			flows, err := flowOptions(c)
			if err != nil {
				return err
			}
			return app.Expose(c.Context, env, app.ExposeOptions{
				Target: c.Args().First(), Services: svcs, Key: keyOptions(c), Allow: c.StringSlice("allow"),
				Budget: budgetOptions(c), Secret: secretOptions(c), Holesail: c.Bool("holesail"), Replace: c.Bool("replace"),
				UDP: c.Bool("udp"), Flows: flows,
			})
		},
	}
}

func forwardCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "forward",
		Usage:     "make the service behind a public key reachable on a local port",
		ArgsUsage: "KEY[/SERVICE]|hs://… [PORT|HOST:PORT|unix:PATH]",
		Flags: append(append(append(keyFlags(),
			&cli.BoolFlag{Name: "raw", Usage: "speak to a hypertele/holesail server (one peer connection per TCP connection, or per UDP client with --udp)", DisableDefaultText: true},
		), secretFlags("KEY is a bare holesail private string: a secret, or a z-base-32 seed")...),
			udpFlags("forward a UDP service to a local UDP port (one flow per client address)")...),
		Action: func(c *cli.Context) error {
			sec := secretOptions(c)
			if err := args(c, keyArgs(sec), 2); err != nil {
				return err
			}
			remote, listen := remoteArgs(c, sec)
			flows, err := flowOptions(c)
			if err != nil {
				return err
			}
			return app.Forward(c.Context, env, app.ForwardOptions{
				Remote: remote, Listen: listen, Key: keyOptions(c), Raw: c.Bool("raw"), Secret: sec,
				UDP: c.Bool("udp"), Flows: flows,
			})
		},
	}
}

func connectCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "connect",
		Usage:     "join stdin/stdout to the service behind a public key (ssh ProxyCommand)",
		ArgsUsage: "KEY[/SERVICE]|hs://…",
		Flags: append(append(keyFlags(),
			&cli.BoolFlag{Name: "raw", Usage: "speak to a hypertele/holesail server", DisableDefaultText: true},
		), secretFlags("KEY is a bare holesail private string: a secret, or a z-base-32 seed")...),
		Action: func(c *cli.Context) error {
			sec := secretOptions(c)
			if err := args(c, keyArgs(sec), 1); err != nil {
				return err
			}
			return app.Connect(c.Context, env, app.ConnectOptions{
				Remote: c.Args().First(), Key: keyOptions(c), Raw: c.Bool("raw"), Secret: sec,
			})
		},
	}
}

func sshCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "ssh",
		Usage:     "run ssh through keytunnel connect (keytunnel's options first, then ssh's)",
		ArgsUsage: "[--key FILE|--seed HEX] [--secret-file FILE|-] [--raw] [ssh options] [user@]KEY[/SERVICE]|hs://… [command]",
		// ssh's own options (-p, -L, ...) must reach ssh untouched;
		// app.ParseSSHArgs takes keytunnel's from the front. Flags are
		// declared for help only.
		SkipFlagParsing: true,
		// No -k: that is ssh's.
		Flags: append(keyFlags()[1:],
			&cli.StringFlag{Name: "key", Usage: "`FILE` holding the key pair's seed (keytunnel keygen --out FILE writes one)"},
			&cli.BoolFlag{Name: "raw", Usage: "speak to a hypertele/holesail server", DisableDefaultText: true},
			&cli.StringFlag{Name: "secret-file", Usage: "the private connection string of the service whose public key is KEY, from `FILE` or stdin (-); also $" + app.SecretEnvVar},
		),
		Action: func(c *cli.Context) error {
			if a := c.Args().First(); a == "--help" || a == "-h" {
				return cli.ShowCommandHelp(c.Lineage()[1], c.Command.Name)
			}
			o, err := app.ParseSSHArgs(c.Args().Slice())
			if err != nil {
				return err
			}
			o.Key.SeedEnv = os.Getenv(app.SeedEnvVar)
			return app.SSH(c.Context, env, o)
		},
	}
}

func upCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "run every [[expose]] and [[forward]] of a TOML file; SIGHUP reloads it",
		Flags: append(keyFlags(),
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Required: true, Usage: "the TOML `FILE`"},
			&cli.StringFlag{Name: "key-dir", Usage: "take the file's relative key paths from `DIR`", DefaultText: "$STATE_DIRECTORY (systemd's StateDirectory), else the file's directory", EnvVars: []string{"KEYTUNNEL_KEY_DIR"}},
		),
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			return app.Up(c.Context, env, app.UpOptions{ConfigFile: c.String("config"), Key: keyOptions(c), KeyDir: c.String("key-dir")})
		},
	}
}

func doctorCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:      "doctor",
		Usage:     "test the connectivity keytunnel needs (bootstrap nodes, UDP, NAT) and, with KEY, the path to that service",
		ArgsUsage: "[KEY]",
		Flags: append(keyFlags(),
			&cli.IntFlag{Name: "sample-mib", Value: 4, Usage: "with KEY, a throughput sample of `N` MiB each way"},
		),
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 1); err != nil {
				return err
			}
			if n := c.Int("sample-mib"); n < 1 || n > 64 {
				return fmt.Errorf("--sample-mib %d: want 1 to 64", n)
			}
			return app.Doctor(c.Context, env, app.DoctorOptions{
				Remote: c.Args().First(), Key: keyOptions(c), Sample: c.Int("sample-mib") << 20,
			})
		},
	}
}

func statusCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "list the tunnels every keytunnel process of this user runs: peers, paths, RTT, bytes, connections",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object (as the global --json does)", DisableDefaultText: true},
		},
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			if c.Bool("json") {
				env.JSON = true
			}
			return app.Status(c.Context, env)
		},
	}
}

func testnetCommand(env *app.Env) *cli.Command {
	return &cli.Command{
		Name:  "testnet",
		Usage: "run a local DHT and print its --bootstrap value",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Aliases: []string{"n"}, Value: 3, Usage: "run `N` nodes"},
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Usage: "UDP `PORT` of the bootstrap node", DefaultText: "any free port"},
			&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "IPv4 `ADDRESS` the nodes bind"},
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
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Usage: "UDP `PORT`", DefaultText: "any free port"},
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
