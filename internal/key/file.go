package key

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A seed file holds one seed as 64 hex characters and a newline; that is what
// `keytunnel keygen` writes. ReadSeedFile also accepts exactly 32 raw bytes,
// the form some tools of the ecosystem store.

// ReadSeedFile reads a seed file and returns the key pair it holds.
func ReadSeedFile(path string) (KeyPair, error) {
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
