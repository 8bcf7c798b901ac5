package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
)

// examples are shown under EXAMPLES in each command's help.
var examples = map[string][]string{
	"keygen": {
		"keytunnel keygen --out ~/.config/keytunnel/me.key   # prints the public key",
		"keytunnel key show ~/.config/keytunnel/me.key       # prints it again, hex and z32",
	},
	"key": {
		"keytunnel key show me.key",
		"echo $KEYTUNNEL_SEED | keytunnel key show -",
	},
	"expose": {
		"keytunnel expose 8080                               # prints this service's public key",
		"keytunnel expose --key web.key --allow KEY 10.0.0.5:80",
		"keytunnel expose --private 8080                     # prints the private string (a secret)",
		"keytunnel expose --holesail 8080                    # holesail clients find the port by themselves",
		"keytunnel expose unix:/var/run/docker.sock          # a Unix socket service",
		"keytunnel expose --replace 8080                     # take the key over from a running expose 8080",
		"keytunnel expose --udp 53                           # a UDP service (DNS); peers: forward --udp KEY PORT",
		"keytunnel expose --service web=8080 --service ssh=22 --allow ssh=KEY   # two services, ssh for KEY only",
	},
	"forward": {
		"keytunnel forward KEY 9000                          # then: curl http://127.0.0.1:9000/",
		"keytunnel forward --key me.key KEY 0.0.0.0:9000",
		"keytunnel forward hs://0000KEY                      # holesail's public string; port from its record",
		"keytunnel forward --secret-file web.secret 9000     # a private string (hs://s000...) kept out of ps",
		"keytunnel forward KEY unix:/run/kt/db.sock          # a Unix socket, mode 0600, removed on exit",
		"keytunnel forward --udp KEY 5353                    # then: dig @127.0.0.1 -p 5353 example.org",
		"keytunnel forward --udp --raw KEY 5353              # a holesail --udp server",
		"keytunnel forward KEY/web 9000                      # the service web of several behind KEY",
	},
	"connect": {
		"ssh -o ProxyCommand='keytunnel connect %h' user@KEY",
		"echo hello | keytunnel connect KEY",
		"KEYTUNNEL_SECRET=$(cat web.secret) keytunnel connect KEY   # a private service",
		"ssh -o ProxyCommand='keytunnel connect %h' user@KEY/ssh     # the service ssh behind KEY",
	},
	"ssh": {
		"keytunnel ssh user@KEY",
		"keytunnel ssh --key me.key -p 22 -L 5432:localhost:5432 user@KEY",
		"keytunnel ssh --secret-file ssh.secret user@KEY     # a private service: KEY is its public key",
		"keytunnel ssh user@KEY/ssh                          # the service ssh of several behind KEY",
	},
	"up": {
		"keytunnel up -c keytunnel.toml                      # kill -HUP PID re-reads the file",
	},
	"status": {
		"keytunnel status                                    # every keytunnel process of this user: tunnels, relays",
		"keytunnel status --json | jq '.processes[].tunnels[].bytes_sent'",
	},
	"testnet": {
		"keytunnel testnet --port 49737                      # then: keytunnel --bootstrap 127.0.0.1:49737 expose 8080",
	},
	"node": {
		"keytunnel node --port 49737",
	},
	"relay": {
		"keytunnel relay --key relay.key --port 49738        # prints the relay's key",
		"keytunnel --relay-through RELAYKEY expose 8080",
	},
	"dht-relay": {
		"keytunnel dht-relay --port 49443                    # then elsewhere: keytunnel --relay tcp://HOST:49443 forward KEY 9000",
	},
	"doctor": {
		"keytunnel doctor                                    # bootstrap nodes, UDP, this host's NAT",
		"keytunnel doctor KEY                                # and the path to a service: direct or relayed, RTT, throughput",
		"keytunnel --relay-through RELAYKEY doctor KEY       # the same with a blind relay to fall back to",
	},
	"version": {
		"keytunnel version",
	},
	"completion": {
		"source <(keytunnel completion bash)                 # bash; add it to ~/.bashrc",
		"keytunnel completion fish > ~/.config/fish/completions/keytunnel.fish",
	},
}

// setupHelp gives every command its examples, sends usage errors to the
// caller (so they print as one line on stderr, not as help on stdout) and
// makes help text readable.
func setupHelp(a *cli.App) {
	cli.CommandHelpTemplate = strings.Replace(cli.CommandHelpTemplate, "DESCRIPTION:", "EXAMPLES:", 1)
	cli.SubcommandHelpTemplate = strings.Replace(cli.SubcommandHelpTemplate, "DESCRIPTION:", "EXAMPLES:", 1)
	cli.FlagStringer = flagString
	a.OnUsageError = usageError(a)
	a.Action = func(c *cli.Context) error {
		if c.NArg() > 0 {
			return fmt.Errorf("unknown command %q; run keytunnel help to list the commands", c.Args().First())
		}
		return cli.ShowAppHelp(c)
	}
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.OnUsageError = usageError(a)
			c.HideHelpCommand = true
			if ex := examples[c.Name]; len(ex) > 0 && c.Description == "" {
				c.Description = strings.Join(ex, "\n")
			}
			walk(c.Subcommands)
		}
	}
	walk(a.Commands)
}

// sliceRepeat is the " [ --x V ]" urfave/cli appends to repeatable flags.
var sliceRepeat = regexp.MustCompile(` \[ [^\]]* \]`)

// urfaveFlagString is urfave/cli's own FlagStringer, which flagString wraps.
var urfaveFlagString = cli.FlagStringer

func flagString(f cli.Flag) string {
	return sliceRepeat.ReplaceAllString(urfaveFlagString(f), "")
}

var flagErr = regexp.MustCompile(`^flag (provided but not defined|needs an argument): -+(.*)$`)

// usageError turns urfave/cli's flag errors into one line that says what
// to do: a global option after the command is moved before it, an
// unknown one points at the command's help.
func usageError(a *cli.App) cli.OnUsageErrorFunc {
	return func(c *cli.Context, err error, isSub bool) error {
		where, help := "", "keytunnel help"
		if isSub && c.Command != nil {
			where, help = c.Command.Name+": ", "keytunnel help "+c.Command.Name
		}
		m := flagErr.FindStringSubmatch(err.Error())
		if m == nil {
			return fmt.Errorf("%s%v; see %s", where, err, help)
		}
		name := m[2]
		dashes := "--"
		if len(name) == 1 {
			dashes = "-"
		}
		if m[1] == "needs an argument" {
			return fmt.Errorf("%s%s%s needs a value; see %s", where, dashes, name, help)
		}
		if isSub && c.Command != nil {
			for _, g := range a.Flags {
				if hasName(g, name) {
					val := ""
					if v, ok := g.(cli.DocGenerationFlag); ok && v.TakesValue() {
						val = " VALUE"
						if u := strings.Split(v.GetUsage(), "`"); len(u) >= 3 {
							val = " " + u[1]
						}
					}
					return fmt.Errorf("%s%s is a global option: put it before the command (keytunnel %s%s %s ...)", where, dashes+name, dashes+name, val, c.Command.Name)
				}
			}
		}
		return fmt.Errorf("%sunknown option %s%s; see %s", where, dashes, name, help)
	}
}

func hasName(f cli.Flag, name string) bool {
	for _, n := range f.Names() {
		if n == name {
			return true
		}
	}
	return false
}
