package holesail

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/keytunnel/keytunnel/internal/key"
)

// A secret file holds one private connection string (hs://s000<secret>),
// or a bare secret or z-base-32 seed, on one line. Like a seed file it
// must be private to its owner (key.CheckPrivate).

// maxSecretFile bounds what ReadSecretFile reads.
const maxSecretFile = MaxSecret + 64

// ReadSecretFile reads the private connection string in path.
func ReadSecretFile(path string) (Conn, error) {
	if err := key.CheckPrivate(path); err != nil {
		return Conn{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return Conn{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return Conn{}, err
	}
	if len(b) > maxSecretFile {
		return Conn{}, ErrSecretTooLong
	}
	return ParsePrivate(string(b))
}

// ParsePrivate reads a private connection string from a file, the
// environment or stdin: surrounding white space (a final newline) is
// dropped, and the string must be a private one.
func ParsePrivate(s string) (Conn, error) {
	c, err := Parse(strings.TrimSpace(s), true)
	if err != nil {
		return Conn{}, err
	}
	return c, nil
}

// WriteSecretFile saves c's private string in a new file, mode 0600 (its
// directory 0700 if it has to be made). It never overwrites a file.
func WriteSecretFile(path string, c Conn) error {
	if !c.Private {
		return errors.New("holesail: not a private connection string")
	}
	err := key.WritePrivateFile(path, c.String()+"\n")
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists", path)
	}
	return err
}
