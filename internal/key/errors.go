package key

import "errors"

var (
	// ErrKeyFormat is returned for text that is neither 64 hex characters
	// nor 52 z-base-32 characters.
	ErrKeyFormat = errors.New("key: not a public key (want 64 hex or 52 z-base-32 characters)")
	// ErrSeedLength is returned for a seed that is not 32 bytes.
	ErrSeedLength = errors.New("key: seed must be 32 bytes")
	// ErrExists is returned by WriteSeedFile when the file is already
	// there, so that no key is ever overwritten by accident.
	ErrExists = errors.New("key: seed file already exists")
	// ErrPermissions is returned by ReadSeedFile for a seed file other
	// users may read or write, or one in a directory they may write (they
	// could swap the file), as ssh refuses an unprotected private key.
	ErrPermissions = errors.New("key: seed file is not private")
)
