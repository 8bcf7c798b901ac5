package key

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// A seed file holds one seed as 64 hex characters and a newline; that is what
// `keytunnel keygen` writes. ReadSeedFile also accepts exactly 32 raw bytes,
// the form some tools of the ecosystem store.

// maxSeedFile bounds what ReadSeedFile reads: a seed file is 65 bytes, and
// a path given by mistake (a log, an image) must not be read whole.
const maxSeedFile = 4096

// ReadSeedFile reads a seed file and returns the key pair it holds. The
// file must be private (see CheckPrivate).
func ReadSeedFile(path string) (KeyPair, error) {
	if err := CheckPrivate(path); err != nil {
		return KeyPair{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("key: reading seed file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSeedFile+1))
	if err != nil {
		return KeyPair{}, fmt.Errorf("key: reading seed file: %w", err)
	}
	s, err := decodeSeedFile(b)
	if err != nil {
		return KeyPair{}, fmt.Errorf("key: seed file %s: %w", path, err)
	}
	return FromSeed(s), nil
}

// decodeSeedFile decodes a seed file's contents: 64 hex characters with
// white space around them, or exactly 32 bytes that are not all hex text.
func decodeSeedFile(b []byte) (Seed, error) {
	if len(b) > maxSeedFile {
		return Seed{}, fmt.Errorf("%w: more than %d bytes", ErrSeedLength, maxSeedFile)
	}
	if len(b) == Size && !isHexText(b) {
		return SeedFromBytes(b)
	}
	return ParseSeed(string(bytes.TrimSpace(b)))
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
	err := WritePrivateFile(path, fmt.Sprintf("%x\n", seed[:]))
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	return nil
}

// WritePrivateFile writes content to a new file at path, mode 0600 from
// its creation on, making the parent directory (mode 0700) if needed. It
// never overwrites: an existing file fails with fs.ErrExist. A file it
// could not finish writing is removed, so no partial secret is left.
func WritePrivateFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
