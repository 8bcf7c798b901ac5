// Command testsummary reads `go test -json` on stdin and prints what a
// plain `go test` would (each package's closing line, the output of failed
// tests, build errors), then a summary with every skipped test and its
// reason: CI must run the whole suite, so a skip there is worth seeing.
// It exits 1 if a test or package failed. Usage (.ci/run):
//
//	go test -json ./... | go run .ci/testsummary/main.go
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output, build-fail
	Test       string
	Output     string
}

type skip struct{ name, reason string }

func main() {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	buf := map[string][]string{} // output of running tests, by package and test
	var skips []skip
	passed, failed := 0, 0
	pkgFailed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Fprintln(out, sc.Text()) // not test2json: pass it on
			continue
		}
		k := e.Package + " " + e.Test
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "build-fail":
			pkgFailed = true
		case "output":
			if e.Test == "" {
				if e.Output != "PASS\n" { // go test prints only the ok line
					fmt.Fprint(out, e.Output)
				}
				continue
			}
			buf[k] = append(buf[k], e.Output)
		case "pass":
			if e.Test != "" {
				passed++
			}
			delete(buf, k)
		case "fail":
			if e.Test == "" {
				pkgFailed = true
				continue
			}
			failed++
			fmt.Fprint(out, strings.Join(buf[k], ""))
			delete(buf, k)
		case "skip":
			if e.Test != "" {
				skips = append(skips, skip{e.Package + "." + e.Test, reason(buf[k])})
			}
			delete(buf, k)
		}
		out.Flush()
	}
	// Tests that never finished (a crash or a timeout) have their output
	// attributed to them: show it.
	for k, lines := range buf {
		fmt.Fprintf(out, "--- unfinished: %s\n%s", k, strings.Join(lines, ""))
	}
	fmt.Fprintf(out, "\ntests: %d passed, %d failed, %d skipped\n", passed, failed, len(skips))
	for _, s := range skips {
		fmt.Fprintf(out, "  SKIP %s: %s\n", s.name, s.reason)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "testsummary: reading go test's output: %v\n", err)
		pkgFailed = true
	}
	if failed > 0 || pkgFailed {
		out.Flush()
		os.Exit(1)
	}
}

// reason is a skipped test's message: its output without the === and
// --- lines go test frames it with.
func reason(lines []string) string {
	var r []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		r = append(r, l)
	}
	if len(r) == 0 {
		return "(no reason given)"
	}
	return strings.Join(r, " | ")
}
