package stack

import "errors"

// ErrServed: Listen found another live process serving the key (it
// answered a handshake made with the key itself) and did not announce.
// ListenOptions.Replace announces anyway.
var ErrServed = errors.New("another running process already serves this key")
