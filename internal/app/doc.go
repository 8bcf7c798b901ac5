// Package app is the runtime behind the keytunnel command: it turns the
// command line's options into DHT nodes, tunnels and output. cmd/keytunnel
// only parses flags and calls one function here per command.
//
// # Output
//
// Stdout carries what a user or a script reads: in text mode one line per
// fact (the public key on expose's first line, the bootstrap address on
// testnet's), with --json one JSON object per line for every Event,
// including the tunnel's (connected, disconnected, refused, redialing).
// Stderr carries logs (log/slog; JSON with --json). `connect` is the
// exception: its stdout is the tunnel, so everything else goes to stderr.
//
// # The network
//
// Every command that needs the DHT gets a Network from Env.OpenNetwork;
// the default binds a UDP socket with dht.ListenUDP, starts a dht.Node on
// Env.Bootstrap and waits until it has joined. Tests replace it with a
// fake that pairs loopback TCP connections.
//
// # doctor
//
// Doctor is the exception to that: it opens its node with stack.Open and
// watches the join itself (bootstrap PINGs, NAT classification) so that
// every step is bounded and reported, and dials with a dht.DialReport to
// say which path a connection took.
//
// # Status and metrics
//
// expose, forward, connect and up register what they run in the Env's
// registry: each tunnel with a function returning its tunnel.Stats, and
// the Network, whose DHT node reports dht.Stats; connect counts its own
// bytes at stdin and stdout (tunnel.Pipe keeps none). relay, dht-relay
// and testnet register what they serve with its counters (servers.go;
// metrics.go names each as a metric). The control socket
// (control.go; one Unix socket per process, read by `keytunnel status`)
// and the Prometheus collector (metrics.go, --metrics) both read one
// snapshot of it; the packages below keep plain atomic counters and know
// neither.
package app
