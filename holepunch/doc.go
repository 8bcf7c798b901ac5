// Package holepunch holds the NAT traversal logic of a HyperDHT connection:
// classifying our NAT from address samples, choosing the punch strategy for
// a pair of NATs, and running punch rounds over UDP sockets.
//
// The logic follows hyperdht's lib/nat.js and lib/holepuncher.js so that a
// Go peer punches in step with a Node peer; the sockets and the clock are
// the caller's, so the state machines here are tested without a network.
package holepunch
