package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/tunnel"
)

// RefusedError is a dial that the exposing side's --allow list turned
// away during the DHT handshake. It is a tunnel.ErrRefused, so that a
// Forwarder fails local connections at once instead of redialing for
// them, and names the key the user has to get allowed.
type RefusedError struct {
	Client key.PublicKey
	// Random: the client had no key of its own (no --key), so Client is
	// a new one each run and no allow list can name it.
	Random bool
	Err    error // the DHT's error
}

func (e *RefusedError) Error() string {
	if e.Random {
		return fmt.Sprintf("the service does not allow this client's key %s, a random one for this run; make a lasting key with keytunnel keygen --out FILE, pass --key FILE and have the service allow it", e.Client)
	}
	return fmt.Sprintf("the service does not allow this client's key %s; its owner can add it with --allow %s", e.Client, e.Client)
}

func (e *RefusedError) Unwrap() []error { return []error{tunnel.ErrRefused, e.Err} }

// dialed turns a DHT refusal (dht.ErrRefused: the server's firewall
// answered; Node servers send the same SERVER_ERROR) into a RefusedError
// for the key kp; other errors pass unchanged.
func dialed(err error, kp key.KeyPair, random bool) error {
	if err != nil && errors.Is(err, dht.ErrRefused) {
		return &RefusedError{Client: kp.Public, Random: random, Err: err}
	}
	return err
}

// refusedClient is called by an exposed key's handshake firewall for a
// client it turns away: without it the exposing side would say nothing
// (the refusal happens before any tunnel exists).
// entry names the expose entry under up ("" otherwise); log is the
// logger that names it.
func (e *Env) refusedClient(log *slog.Logger, entry string, service, client key.PublicKey, addr netip.AddrPort) {
	log.Warn("refused a client: its key is not on the --allow list", "service", service.String(), "client_key", client.String(), "address", addr.String())
	e.out.tunnelEvent(entry, tunnel.Event{Kind: tunnel.EventRefused, Time: time.Now(), Remote: client, Err: errors.New("key not on the --allow list")})
}
