package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// Release builds stamp these:
//
//	go build -ldflags "-X main.version=v1.0.0 -X main.commit=$(git rev-parse HEAD)" ./cmd/keytunnel
//
// Otherwise they come from the build info: `go install …@v1.0.0` records
// the module version, a build inside a git checkout records the commit
// (unless -buildvcs=false, as GOFLAGS sets on some machines).
var (
	version string
	commit  string
)

// buildVersion is the version, commit and Go version of this binary, each
// "unknown" when neither the linker flags nor the build info have it.
func buildVersion() (ver, rev, goVersion string) {
	ver, rev, goVersion = version, commit, runtime.Version()
	bi, ok := debug.ReadBuildInfo()
	if ok {
		goVersion = bi.GoVersion
		if ver == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			ver = bi.Main.Version
		}
		if rev == "" {
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if rev != "" && modified {
				rev += " (modified)"
			}
		}
	}
	if ver == "" {
		ver = "devel"
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev, goVersion
}

func printVersion(w io.Writer) {
	ver, rev, gov := buildVersion()
	fmt.Fprintf(w, "keytunnel %s\ncommit %s\n%s %s/%s\n", ver, rev, gov, runtime.GOOS, runtime.GOARCH)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, commit and Go version (also: keytunnel --version)",
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0); err != nil {
				return err
			}
			printVersion(c.App.Writer)
			return nil
		},
	}
}
