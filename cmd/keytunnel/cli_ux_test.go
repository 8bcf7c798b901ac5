package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/app"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// runProc runs a short keytunnel command that must not reach the DHT
// (its bootstrap is a loopback port nothing answers at) and returns its
// exit code, stdout and stderr.
func runProc(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := proctest.Start(t, proctest.Env(t, "127.0.0.1:9"), args...)
	code = p.Wait(30 * time.Second)
	return code, p.Out.String(), p.Err.String()
}

// TestVersion: `keytunnel version` and `--version` print the version, the
// commit and the Go version; a release build's -ldflags -X values win.
func TestVersion(t *testing.T) {
	want := "keytunnel devel\ncommit unknown\n" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errs := runProc(t, args...)
		// The test binary is built without VCS stamping or a module
		// version, so both are unknown.
		if code != 0 || errs != "" || !strings.HasPrefix(out, "keytunnel ") || !strings.HasSuffix(out, "\n"+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want like %q", args, code, out, errs, want)
		}
	}

	bin := filepath.Join(t.TempDir(), "keytunnel")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin,
		"-ldflags", "-X main.version=v1.2.3 -X main.commit=0123abc", "github.com/keytunnel/keytunnel/cmd/keytunnel")
	if out, err := proctest.RunBounded(build, 4*time.Minute); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := proctest.RunBounded(exec.Command(bin, "--version"), time.Minute)
	if want := "keytunnel v1.2.3\ncommit 0123abc\n" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"; err != nil || string(out) != want {
		t.Fatalf("release build: %v, %q, want %q", err, out, want)
	}
}

// TestHelpPages: every command's help has an example, readable flag names
// (--key FILE, not the usage's first quoted phrase) and no default shown
// twice or for a bool; `keytunnel ssh --help` is keytunnel's help, not
// ssh's, and names keytunnel's ssh options.
func TestHelpPages(t *testing.T) {
	optLine := regexp.MustCompile(`^   (--[a-z-]+( [A-Z:]+)?(, -[a-z]( [A-Z:]+)?)?)  +\S`)
	for _, c := range newApp(&app.Env{}).VisibleCommands() {
		if c.Name == "help" {
			continue
		}
		code, out, errs := runProc(t, "help", c.Name)
		if code != 0 || errs != "" {
			t.Errorf("help %s: exit %d, stderr %q", c.Name, code, errs)
			continue
		}
		if _, ex, ok := strings.Cut(out, "EXAMPLES:\n   "); !ok || !strings.Contains(ex[:strings.Index(ex+"\n\n", "\n\n")], "keytunnel") {
			t.Errorf("help %s has no example:\n%s", c.Name, out)
		}
		for _, bad := range []string{"(default: 0)", "(default: false)", ") (default:", "[ --"} {
			if strings.Contains(out, bad) {
				t.Errorf("help %s shows %q:\n%s", c.Name, bad, out)
			}
		}
		_, opts, _ := strings.Cut(out, "OPTIONS:\n")
		for _, l := range strings.Split(strings.TrimRight(opts, "\n"), "\n") {
			if !optLine.MatchString(l) {
				t.Errorf("help %s: garbled option line %q", c.Name, l)
			}
		}
	}
	_, help, _ := runProc(t, "help", "ssh")
	code, out, errs := runProc(t, "ssh", "--help")
	if code != 0 || errs != "" || out != help {
		t.Fatalf("ssh --help: exit %d, stderr %q, stdout %q; want help ssh's %q", code, errs, out, help)
	}
	for _, f := range []string{"--key FILE", "--seed HEX", "--raw"} {
		if !strings.Contains(help, f) {
			t.Errorf("help ssh lacks %s:\n%s", f, help)
		}
	}
}

// TestUsageErrors: a usage error is one line on stderr and exit status 1,
// nothing on stdout; a global option after the command says where it goes.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"expose", "--json", "52081"}, "keytunnel: expose: --json is a global option: put it before the command (keytunnel --json expose ...)"},
		{[]string{"forward", "--bootstrap", "127.0.0.1:1", "KEY"}, "keytunnel: forward: --bootstrap is a global option: put it before the command (keytunnel --bootstrap HOST:PORT forward ...)"},
		{[]string{"expose", "--bogus", "1"}, "keytunnel: expose: unknown option --bogus; see keytunnel help expose"},
		{[]string{"expose", "--key"}, "keytunnel: expose: --key needs a value; see keytunnel help expose"},
		{[]string{"--bogus", "expose"}, "keytunnel: unknown option --bogus; see keytunnel help"},
		{[]string{"exposee", "8080"}, `keytunnel: unknown command "exposee"; run keytunnel help to list the commands`},
		{[]string{"completion", "tcsh"}, `keytunnel: completion: unknown shell "tcsh"; want bash, zsh or fish`},
	} {
		code, out, errs := runProc(t, tc.args...)
		if code != 1 || out != "" || errs != tc.want+"\n" {
			t.Errorf("%v: exit %d, stdout %q\nstderr %q\nwant   %q", tc.args, code, out, errs, tc.want+"\n")
		}
	}
}

// TestCompletion: the bash script completes commands, each command's
// options, --log-level's values and help topics when bash runs it; zsh
// and fish get scripts naming the same commands.
func TestCompletion(t *testing.T) {
	code, script, errs := runProc(t, "completion", "bash")
	if code != 0 || errs != "" {
		t.Fatalf("completion bash: exit %d, stderr %q", code, errs)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash not installed")
	}
	f := filepath.Join(t.TempDir(), "keytunnel.bash")
	if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	for words, want := range map[string]string{
		"keytunnel ex":                      "expose",
		"keytunnel --bootstrap 1.2.3.4:5 f": "forward",
		"keytunnel expose --":               "--key --seed-file --seed --allow --service --replace --holesail --private --secret-file --max-sessions --max-streams-per-session --max-streams --max-buffer-mib --udp --udp-idle-timeout --max-flows --help",
		"keytunnel forward --u":             "--udp --udp-idle-timeout",
		"keytunnel ssh --r":                 "--raw",
		"keytunnel --log-level w":           "warn",
		"keytunnel help con":                "connect",
		"keytunnel completion z":            "zsh",
		"keytunnel --j":                     "--json",
	} {
		cmd := exec.Command(bash, "-c", `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($#-1)); _keytunnel; echo "${COMPREPLY[*]}"`, "bash", f)
		cmd.Args = append(cmd.Args, strings.Fields(words)...)
		if strings.HasSuffix(words, " ") {
			cmd.Args = append(cmd.Args, "")
		}
		out, err := proctest.RunBounded(cmd, 30*time.Second)
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("%q completes to %q (%v), want %q", words, out, err, want)
		}
	}
	for _, sh := range []string{"zsh", "fish"} {
		code, out, errs := runProc(t, "completion", sh)
		if code != 0 || errs != "" || !strings.Contains(out, "expose") || !strings.Contains(out, "dht-relay") {
			t.Errorf("completion %s: exit %d, stderr %q, stdout %q", sh, code, errs, out)
		}
	}
}

// runConnect runs `keytunnel connect` to completion with stdin and the
// environment given, and returns its stdout, stderr and error.
func runConnect(t *testing.T, env []string, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(proctest.Binary(t), append([]string{"connect"}, args...)...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var e strings.Builder
	cmd.Stderr = &e
	out, err := proctest.RunBounded(cmd, 60*time.Second)
	return string(out), e.String(), err
}
