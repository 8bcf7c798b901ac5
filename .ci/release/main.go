// Command release cross-builds keytunnel for every released platform,
// stamps the version into each binary and writes one archive per platform
// and a SHA256SUMS file:
//
//	go run ./.ci/release [-version v1.2.3] [-out dist] [-targets linux/amd64,...]
//
// The version defaults to `git describe --tags --always --dirty`, the
// commit to `git rev-parse HEAD`; both reach cmd/keytunnel's version.go
// through -ldflags -X, so `keytunnel version` prints them. Builds are
// static (CGO_ENABLED=0) and reproducible from the same tree (-trimpath,
// -buildid=, archive entries dated to the commit).
//
// It is a Go program rather than a shell script so that it needs nothing
// but Go: archive/tar, archive/zip and crypto/sha256 replace tar, zip
// and sha256sum, which differ between Linux, macOS and Windows.
package main

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// defaultTargets are the released platforms: every OS keytunnel supports
// on the two common 64-bit architectures.
const defaultTargets = "linux/amd64,linux/arm64,darwin/amd64,darwin/arm64,windows/amd64,windows/arm64,freebsd/amd64,freebsd/arm64"

func main() {
	version := flag.String("version", "", "version to stamp (default: git describe --tags --always --dirty)")
	out := flag.String("out", "dist", "directory for the archives and SHA256SUMS")
	targets := flag.String("targets", defaultTargets, "comma-separated GOOS/GOARCH list")
	flag.Parse()
	if err := run(*version, *out, strings.Split(*targets, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(version, out string, targets []string) error {
	commit, err := git("rev-parse", "HEAD")
	if err != nil {
		return err
	}
	if version == "" {
		if version, err = git("describe", "--tags", "--always", "--dirty"); err != nil {
			return err
		}
	}
	if strings.ContainsAny(version, " \t'\"/\\") {
		return fmt.Errorf("version %q: no spaces, quotes or slashes", version)
	}
	// Archive entries carry the commit's time, so that two builds of one
	// commit give the same archives.
	ts, err := git("log", "-1", "--format=%ct")
	if err != nil {
		return err
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("commit time %q: %w", ts, err)
	}
	mtime := time.Unix(sec, 0).UTC()
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	sums := map[string]string{}
	for _, t := range targets {
		goos, goarch, ok := strings.Cut(strings.TrimSpace(t), "/")
		if !ok || goos == "" || goarch == "" {
			return fmt.Errorf("target %q: want GOOS/GOARCH", t)
		}
		start := time.Now()
		name, err := buildTarget(out, version, commit, goos, goarch, mtime)
		if err != nil {
			return err
		}
		sum, err := fileSHA256(filepath.Join(out, name))
		if err != nil {
			return err
		}
		sums[name] = sum
		fmt.Printf("%s %.1fs\n", filepath.Join(out, name), time.Since(start).Seconds())
	}
	names := make([]string, 0, len(sums))
	for n := range sums {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s  %s\n", sums[n], n) // sha256sum's format: sha256sum -c SHA256SUMS checks it
	}
	return os.WriteFile(filepath.Join(out, "SHA256SUMS"), []byte(b.String()), 0o644)
}

// buildTarget builds one platform's binary and archives it with the
// README; it returns the archive's name.
func buildTarget(out, version, commit, goos, goarch string, mtime time.Time) (string, error) {
	exe := "keytunnel"
	if goos == "windows" {
		exe += ".exe"
	}
	tmp, err := os.MkdirTemp("", "keytunnel-release-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, exe)
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", fmt.Sprintf("-s -w -buildid= -X main.version=%s -X main.commit=%s", version, commit),
		"-o", bin, "./cmd/keytunnel")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s/%s: %w", goos, goarch, err)
	}
	dir := fmt.Sprintf("keytunnel_%s_%s_%s", strings.TrimPrefix(version, "v"), goos, goarch)
	files := []archived{{bin, dir + "/" + exe, 0o755}, {"README.md", dir + "/README.md", 0o644}}
	if goos == "windows" {
		name := dir + ".zip"
		return name, writeZip(filepath.Join(out, name), files, mtime)
	}
	name := dir + ".tar.gz"
	return name, writeTarGz(filepath.Join(out, name), files, mtime)
}

type archived struct {
	src, name string
	mode      int64
}

func writeTarGz(path string, files []archived, mtime time.Time) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer closeInto(f, &err)
	gz := gzip.NewWriter(f)
	defer closeInto(gz, &err)
	tw := tar.NewWriter(gz)
	defer closeInto(tw, &err)
	for _, a := range files {
		data, err := os.ReadFile(a.src)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: a.name, Mode: a.mode, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return nil
}

func writeZip(path string, files []archived, mtime time.Time) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer closeInto(f, &err)
	zw := zip.NewWriter(f)
	defer closeInto(zw, &err)
	for _, a := range files {
		data, err := os.ReadFile(a.src)
		if err != nil {
			return err
		}
		h := &zip.FileHeader{Name: a.name, Method: zip.Deflate, Modified: mtime}
		h.SetMode(os.FileMode(a.mode))
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	return nil
}

// closeInto closes c and keeps its error if none came before: a failed
// Close of a writer means a truncated archive.
func closeInto(c io.Closer, err *error) {
	if cerr := c.Close(); *err == nil {
		*err = cerr
	}
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func git(args ...string) (string, error) {
	b, err := exec.Command("git", args...).Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(b)), nil
}
