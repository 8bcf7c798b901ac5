package key

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeedFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "id.key")
	kp, _ := Generate(nil)
	if err := WriteSeedFile(p, kp.Seed()); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, err %v", st.Mode(), err)
	}
	got, err := ReadSeedFile(p)
	if err != nil || got.Public != kp.Public {
		t.Fatalf("read back: %v", err)
	}
	if err := WriteSeedFile(p, Seed{}); !errors.Is(err, ErrExists) {
		t.Fatalf("overwrite: %v", err)
	}
	if again, _ := ReadSeedFile(p); again.Public != kp.Public {
		t.Fatal("key was overwritten")
	}
	raw := filepath.Join(dir, "raw.key")
	seed := kp.Seed()
	os.WriteFile(raw, seed[:], 0o600)
	if got, err := ReadSeedFile(raw); err != nil || got.Public != kp.Public {
		t.Fatalf("raw seed: %v", err)
	}
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("not a seed\n"), 0o600)
	if _, err := ReadSeedFile(bad); err == nil {
		t.Fatal("bad seed file accepted")
	}
	if _, err := ReadSeedFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestSeedFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	p := filepath.Join(dir, "id.key")
	kp, _ := Generate(nil)
	if err := WriteSeedFile(p, kp.Seed()); err != nil {
		t.Fatal(err)
	}
	for _, m := range []os.FileMode{0o640, 0o604, 0o602, 0o666} {
		os.Chmod(p, m)
		var pe *PermissionError
		if _, err := ReadSeedFile(p); !errors.Is(err, ErrPermissions) || !errors.As(err, &pe) || pe.Mode != m || pe.Dir != "" {
			t.Errorf("mode %04o: %v", m, err)
		}
	}
	os.Chmod(p, 0o400)
	os.Chmod(dir, 0o757)
	if _, err := ReadSeedFile(p); !errors.Is(err, ErrPermissions) {
		t.Errorf("directory 0757: %v", err)
	}
	os.Chmod(dir, 0o775) // group-writable directories are common (user private groups)
	if _, err := ReadSeedFile(p); err != nil {
		t.Errorf("mode 0400 in a 0775 directory: %v", err)
	}
}

// FuzzReadSeedFile writes fuzzed contents to a private file and reads it
// back: no panic; what is accepted is either 32 raw bytes or hex text of
// the seed, and the file WriteSeedFile makes of that seed reads back to
// the same key pair.
func FuzzReadSeedFile(f *testing.F) {
	dir := f.TempDir()
	kp := FromSeed(Seed{1, 2, 3, 0xfe})
	written := filepath.Join(dir, "written.key")
	if err := WriteSeedFile(written, kp.Seed()); err != nil {
		f.Fatal(err)
	}
	line, err := os.ReadFile(written)
	if err != nil {
		f.Fatal(err)
	}
	seed := kp.Seed()
	f.Add(line)
	f.Add(seed[:])
	f.Add([]byte(" " + strings.ToUpper(string(line[:64])) + "\r\n"))
	f.Add(line[:32])
	f.Add([]byte("not a seed\n"))
	f.Add(bytes.Repeat([]byte{' '}, maxSeedFile+1))
	file := filepath.Join(dir, "fuzz.key")
	f.Fuzz(func(t *testing.T, in []byte) {
		if err := os.WriteFile(file, in, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadSeedFile(file)
		s, derr := decodeSeedFile(in)
		if (err == nil) != (derr == nil) || err == nil && got.Public != FromSeed(s).Public {
			t.Fatalf("%q: ReadSeedFile %v, decodeSeedFile %v", in, err, derr)
		}
		if err != nil {
			return
		}
		raw := len(in) == Size && bytes.Equal(s[:], in)
		text := strings.EqualFold(fmt.Sprintf("%x", s[:]), strings.TrimSpace(string(in)))
		if !raw && !text {
			t.Fatalf("%q accepted as seed %x", in, s[:])
		}
		again := filepath.Join(t.TempDir(), "again.key")
		if err := WriteSeedFile(again, s); err != nil {
			t.Fatal(err)
		}
		if kp2, err := ReadSeedFile(again); err != nil || kp2.Public != got.Public || kp2.Seed() != s {
			t.Fatalf("seed %x does not round trip through WriteSeedFile: %v", s[:], err)
		}
	})
}
