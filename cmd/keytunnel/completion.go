package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// The completion scripts are generated from the command tree, so they
// list exactly the commands and options the binary has. They complete
// commands, options, --log-level's values and help topics; file names
// everywhere else.

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 1); err != nil {
				return err
			}
			return writeCompletion(c.App.Writer, c.App, c.Args().First())
		},
	}
}

func writeCompletion(w io.Writer, a *cli.App, shell string) error {
	switch shell {
	case "bash":
		writeBash(w, a)
	case "zsh":
		// zsh runs bash completion functions through bashcompinit.
		fmt.Fprintf(w, "#compdef keytunnel\nautoload -U +X bashcompinit && bashcompinit\n")
		writeBash(w, a)
	case "fish":
		writeFish(w, a)
	default:
		return fmt.Errorf("completion: unknown shell %q; want bash, zsh or fish", shell)
	}
	return nil
}

// flagNames lists a flag set's names as the shell sees them (--long, -s),
// and separately those that take a value.
func flagNames(fs []cli.Flag) (all, valued []string) {
	for _, f := range fs {
		takes := false
		if d, ok := f.(cli.DocGenerationFlag); ok {
			takes = d.TakesValue()
		}
		for _, n := range f.Names() {
			n = dash(n)
			all = append(all, n)
			if takes {
				valued = append(valued, n)
			}
		}
	}
	return all, valued
}

func dash(n string) string {
	if len(n) == 1 {
		return "-" + n
	}
	return "--" + n
}

func commandNames(a *cli.App) []string {
	var names []string
	for _, c := range a.VisibleCommands() {
		names = append(names, c.Name)
	}
	return names
}

func writeBash(w io.Writer, a *cli.App) {
	gAll, gValued := flagNames(append(a.Flags, cli.HelpFlag, cli.VersionFlag))
	cmds := commandNames(a)
	fmt.Fprintf(w, `# bash completion for keytunnel: source <(keytunnel completion bash)
_keytunnel() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd="" i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		%s) ((i++)) ;;
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done
	case $prev in
	--log-level) COMPREPLY=($(compgen -W "debug info warn error" -- "$cur")); return ;;
	esac
	local words
	case $cmd in
	"") words="%s %s" ;;
	help) words="%s" ;;
	completion) words="bash zsh fish" ;;
`, strings.Join(gValued, "|"), strings.Join(cmds, " "), strings.Join(gAll, " "), strings.Join(cmds, " "))
	for _, c := range a.VisibleCommands() {
		all, _ := flagNames(append(c.Flags, cli.HelpFlag))
		fmt.Fprintf(w, "\t%s) words=%q ;;\n", c.Name, strings.Join(all, " "))
	}
	fmt.Fprintf(w, `	esac
	if [[ $cur == -* || -z $cmd || $cmd == help || $cmd == completion ]]; then
		COMPREPLY=($(compgen -W "$words" -- "$cur"))
	fi
}
complete -o default -F _keytunnel keytunnel
`)
}

// fishQuote quotes s for fish.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func writeFish(w io.Writer, a *cli.App) {
	fmt.Fprintln(w, "# fish completion for keytunnel: keytunnel completion fish > ~/.config/fish/completions/keytunnel.fish")
	fmt.Fprintln(w, "complete -c keytunnel -f")
	flag := func(cond string, f cli.Flag) {
		d, _ := f.(cli.DocGenerationFlag)
		line := "complete -c keytunnel -n " + fishQuote(cond)
		for _, n := range f.Names() {
			if len(n) == 1 {
				line += " -s " + n
			} else {
				line += " -l " + n
			}
		}
		if d != nil {
			if d.TakesValue() {
				line += " -r -F"
			}
			line += " -d " + fishQuote(strings.ReplaceAll(d.GetUsage(), "`", ""))
		}
		fmt.Fprintln(w, line)
	}
	for _, f := range append(a.Flags, cli.VersionFlag) {
		flag("__fish_use_subcommand", f)
	}
	cmds := commandNames(a)
	sort.Strings(cmds)
	for _, c := range a.VisibleCommands() {
		fmt.Fprintf(w, "complete -c keytunnel -n __fish_use_subcommand -a %s -d %s\n", c.Name, fishQuote(c.Usage))
		for _, f := range c.Flags {
			flag("__fish_seen_subcommand_from "+c.Name, f)
		}
	}
	fmt.Fprintf(w, "complete -c keytunnel -n '__fish_seen_subcommand_from help' -a %s\n", fishQuote(strings.Join(cmds, " ")))
	fmt.Fprintln(w, "complete -c keytunnel -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'")
	fmt.Fprintln(w, "complete -c keytunnel -l log-level -x -a 'debug info warn error'")
}
