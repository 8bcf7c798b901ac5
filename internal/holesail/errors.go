package holesail

import "errors"

var (
	// ErrShortURL is an hs:// string without its four flag characters
	// and key.
	ErrShortURL = errors.New("hs:// string too short: want hs://0000<public key> or hs://s000<secret>")
	// ErrPublicURL is an hs://0000 string where a private one was asked
	// for (--private).
	ErrPublicURL = errors.New("hs://0000… is a public connection string; drop --private, or use the private hs://s000… string")
	// ErrNotKey is a public string whose key is not one.
	ErrNotKey = errors.New("not a public key (want 52 z-base-32 or 64 hex characters) or holesail connection string (hs://…)")
	// ErrEmptySecret is a private string without a secret.
	ErrEmptySecret = errors.New("the secret is empty")
	// ErrSecretTooLong is a secret over MaxSecret bytes.
	ErrSecretTooLong = errors.New("the secret is too long")
	// ErrSecretChars is a secret with control characters or invalid
	// UTF-8 (a line break pasted with it, say).
	ErrSecretChars = errors.New("the secret contains control characters or invalid UTF-8")
	// ErrRecord is a DHT record that is not a holesail record.
	ErrRecord = errors.New("not a holesail record")
)
