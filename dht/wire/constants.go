package wire

import (
	"time"

	"golang.org/x/crypto/blake2b"
)

// Command is a hyperdht command id, sent as a dht-rpc command without the
// internal flag.
type Command uint64

// Command ids from lib/constants.js.
const (
	CmdPeerHandshake Command = 0
	CmdPeerHolepunch Command = 1
	CmdFindPeer      Command = 2
	CmdLookup        Command = 3
	CmdAnnounce      Command = 4
	CmdUnannounce    Command = 5
	CmdMutablePut    Command = 6
	CmdMutableGet    Command = 7
	CmdImmutablePut  Command = 8
	CmdImmutableGet  Command = 9
	CmdPlugin        Command = 10
)

var commandNames = [...]string{
	"PEER_HANDSHAKE", "PEER_HOLEPUNCH", "FIND_PEER", "LOOKUP", "ANNOUNCE", "UNANNOUNCE",
	"MUTABLE_PUT", "MUTABLE_GET", "IMMUTABLE_PUT", "IMMUTABLE_GET", "PLUGIN",
}

func (c Command) String() string {
	if c < Command(len(commandNames)) {
		return commandNames[c]
	}
	return "COMMAND(" + itoa(uint64(c)) + ")"
}

// Storage reports whether only persistent nodes (with a DHT id) serve the
// command; ephemeral nodes leave it to dht-rpc, which answers
// UNKNOWN_COMMAND.
func (c Command) Storage() bool { return c >= CmdFindPeer && c <= CmdPlugin }

// Namespace derives one namespace the way hypercore-crypto.namespace does:
// H(H(name) ‖ byte(id)). Computing it rather than pasting the hex keeps the
// derivation checked by the sheet's values in the tests.
func Namespace(name string, id byte) [32]byte {
	inner := blake2b.Sum256([]byte(name))
	return blake2b.Sum256(append(inner[:], id))
}

// Namespaces used as signature and prologue prefixes.
var (
	NSAnnounce      = Namespace("hyperswarm/dht", byte(CmdAnnounce))
	NSUnannounce    = Namespace("hyperswarm/dht", byte(CmdUnannounce))
	NSMutablePut    = Namespace("hyperswarm/dht", byte(CmdMutablePut))
	NSPeerHandshake = Namespace("hyperswarm/dht", byte(CmdPeerHandshake))
	NSPeerHolepunch = Namespace("hyperswarm/dht", byte(CmdPeerHolepunch))
	NSPlugin        = Namespace("hyperswarm/dht", byte(CmdPlugin))
)

// Firewall is a node's NAT class as reported in noise and holepunch
// payloads. It is a uint on the wire, so unknown values survive a decode.
type Firewall uint64

// Firewall values from lib/constants.js.
const (
	FirewallUnknown    Firewall = 0
	FirewallOpen       Firewall = 1
	FirewallConsistent Firewall = 2
	FirewallRandom     Firewall = 3
)

func (f Firewall) String() string {
	switch f {
	case FirewallUnknown:
		return "UNKNOWN"
	case FirewallOpen:
		return "OPEN"
	case FirewallConsistent:
		return "CONSISTENT"
	case FirewallRandom:
		return "RANDOM"
	}
	return "FIREWALL(" + itoa(uint64(f)) + ")"
}

// Mode says which hop a PEER_HANDSHAKE or PEER_HOLEPUNCH message is on
// (lib/router.js).
type Mode uint64

// Modes from lib/router.js.
const (
	ModeFromClient      Mode = 0
	ModeFromServer      Mode = 1
	ModeFromRelay       Mode = 2
	ModeFromSecondRelay Mode = 3
	ModeReply           Mode = 4
)

func (m Mode) String() string {
	switch m {
	case ModeFromClient:
		return "FROM_CLIENT"
	case ModeFromServer:
		return "FROM_SERVER"
	case ModeFromRelay:
		return "FROM_RELAY"
	case ModeFromSecondRelay:
		return "FROM_SECOND_RELAY"
	case ModeReply:
		return "REPLY"
	}
	return "MODE(" + itoa(uint64(m)) + ")"
}

// DefaultPort is the UDP port hyperdht binds when none is given.
const DefaultPort = 49737

// BootstrapNodes are the public network's bootstrap nodes in the reference
// form suggestedIP@dnsName:port (see dht-rpc.md §7 for how to resolve them).
var BootstrapNodes = []string{
	"88.99.3.86@node1.hyperdht.org:49737",
	"142.93.90.113@node2.hyperdht.org:49737",
	"138.68.147.8@node3.hyperdht.org:49737",
}

// Defaults and limits from index.js and lib/persistent.js.
const (
	// DefaultMaxSize bounds the records, refreshes, bumps and router
	// caches; the mutable and immutable caches get half of it each.
	DefaultMaxSize = 65536
	// DefaultMaxAge is the nominal lifetime of announce records, refreshes,
	// bumps and router entries. Caches are swept every ⅔ of it, so an
	// entry actually lives between 0.66 and 1.33 of it.
	DefaultMaxAge = 20 * time.Minute
	// DefaultMutableMaxAge is the nominal lifetime of mutable and
	// immutable values (used unless a maxAge option overrides every cache).
	DefaultMutableMaxAge = 48 * time.Hour
	// RelayAddressesCacheSize bounds the client's cache of relay addresses
	// per public key.
	RelayAddressesCacheSize = 512

	// MaxLookupRecords is how many records a LOOKUP reply carries at most.
	MaxLookupRecords = 20
	// MaxRelayAddresses is how many relay addresses a stored announce
	// keeps; the rest are dropped before storing (after the signature
	// check, which covers them all).
	MaxRelayAddresses = 3
	// MaxBumpDrift is how far in the future (in wall-clock milliseconds)
	// an announce's bump may be and still be stored.
	MaxBumpDrift = 60 * time.Second

	// ConnectionKeepAlive is the secret-stream keepalive on connections.
	ConnectionKeepAlive = 5 * time.Second
	// RandomPunchInterval spaces holepunches that involve a random NAT.
	RandomPunchInterval = 20 * time.Second
	// RandomPunchLimit is how many such holepunches may run at once.
	RandomPunchLimit = 1

	// MaxArrayLen is compact-encoding's array bound: longer arrays make
	// the reference throw, so a Go decoder rejects them too.
	MaxArrayLen = 0x100000
)

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
