package key

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// A seed file holds one seed as 64 hex characters and a newline; that is what
// `keytunnel keygen` writes. ReadSeedFile also accepts exactly 32 raw bytes,
// the form some tools of the ecosystem store.

// ReadSeedFile reads a seed file and returns the key pair it holds. The
// file must be private (see CheckPrivate).
func ReadSeedFile(path string) (KeyPair, error) {
	if err := CheckPrivate(path); err != nil {
		return KeyPair{}, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("key: reading seed file: %w", err)
	}
	if len(b) == Size && !isHexText(b) {
		s, _ := SeedFromBytes(b)
		return FromSeed(s), nil
	}
	s, err := ParseSeed(string(bytes.TrimSpace(b)))
	if err != nil {
		return KeyPair{}, fmt.Errorf("key: seed file %s: %w", path, err)
	}
	return FromSeed(s), nil
}

// CheckPrivate returns a *PermissionError when other users may read or
// write the file at path, or write the directory holding it (unless the
// directory is sticky, as /tmp is). A missing file is not its business:
// ReadSeedFile reports that.
func CheckPrivate(path string) error {
	if runtime.GOOS == "windows" {
		return nil // no Unix permission bits
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return &PermissionError{Path: path, Mode: m}
	}
	dir := filepath.Dir(path)
	if dst, err := os.Stat(dir); err == nil && dst.Mode().Perm()&0o002 != 0 && dst.Mode()&fs.ModeSticky == 0 {
		return &PermissionError{Path: path, Dir: dir, Mode: dst.Mode().Perm()}
	}
	return nil
}

// PermissionError is a seed file that is not private; errors.Is(err,
// ErrPermissions) holds.
type PermissionError struct {
	Path string
	Dir  string      // set when the directory is the problem
	Mode fs.FileMode // of Path, or of Dir when set
}

// Reason says what is wrong and the chmod that fixes it.
func (e *PermissionError) Reason() string {
	if e.Dir != "" {
		return fmt.Sprintf("any user can replace this key file: its directory has mode %04o; run chmod o-w %s", e.Mode, e.Dir)
	}
	return fmt.Sprintf("other users can read or write this key file (mode %04o); run chmod 600 %s", e.Mode, e.Path)
}

func (e *PermissionError) Error() string { return "key: " + e.Path + ": " + e.Reason() }

func (e *PermissionError) Is(target error) bool { return target == ErrPermissions }

func isHexText(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == '\n' || c == '\r' || c == ' ') {
			return false
		}
	}
	return true
}

// WriteSeedFile writes seed to a new file at path with mode 0600, creating
// the parent directory (mode 0700) if needed. It refuses to overwrite.
func WriteSeedFile(path string, seed Seed) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	line := fmt.Sprintf("%x\n", seed[:])
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("key: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("key: writing %s: %w", path, err)
	}
	return nil
}
