// Package stack assembles what the keytunnel command and the keytunnel
// library both run on: a DHT node on its own UDP sockets (or a dht-relay
// client where UDP is blocked), joined to the network, and adapters from it
// to tunnel.Dialer and tunnel.PeerListener. It exists so that internal/app
// and the root package build the node one way, not two.
package stack
