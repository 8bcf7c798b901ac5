// Package keytunnel listens on a public key and dials public keys: peers
// find each other on the HyperDHT network (the DHT behind Hyperswarm,
// hypertele and holesail), connections are hole-punched (or paired through
// a blind relay) and end-to-end encrypted, and no IP address, open port or
// central server is involved.
//
// A Node is one identity (an Ed25519 key pair) on the DHT. Listen gives a
// net.Listener on the node's key; Dial gives a net.Conn to another key.
// Between keytunnel peers every connection is a stream of one multiplexed,
// encrypted session per pair of peers, so only the first Dial to a peer
// pays for the DHT lookup and the hole punch. This is the session
// `keytunnel expose` serves and `keytunnel forward` opens, so a program's
// Listen is reachable with `keytunnel forward KEY PORT`, and Dial reaches
// `keytunnel expose`.
//
//	n, err := keytunnel.New(keytunnel.Config{})  // the public DHT, a fresh key
//	ln, err := n.Listen()                        // peers reach n.PublicKey()
//	c, err := n.Dial(ctx, "<hex or z32 key>")    // elsewhere
//
// Expose and Forward do what the commands of the same name do: serve a
// local TCP service under the node's key, or open a local TCP port that
// reaches a key. Testnet starts an in-process DHT for tests. The examples
// (Example, ExampleNode_Listen, ExampleNode_Expose; `go doc -http` shows
// them) run as tests against a Testnet, and examples/embed in the
// repository is a program of its own module built on this package.
//
// # Compatibility
//
// This package is the stable API of the module: its exported identifiers
// keep their meaning across minor versions. Every other package of the
// module (dht, tunnel, relay, ...) may change at any time. On the wire,
// keytunnel speaks HyperDHT, @hyperswarm/secret-stream and blind-relay as
// the Node reference does, so a Dial reaches a hyperdht server and a Node
// client reaches a Listen; the multiplexed session between keytunnel peers
// is keytunnel's own (documented in the tunnel package), and Raw talks to
// hypertele and holesail.
package keytunnel
