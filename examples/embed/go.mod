module example.com/embed

go 1.26.8

require github.com/keytunnel/keytunnel v0.0.0

require (
	filippo.io/edwards25519 v1.2.0 // indirect
	github.com/coder/websocket v1.8.15 // indirect
	github.com/flynn/noise v1.1.0 // indirect
	github.com/libp2p/go-buffer-pool v0.0.2 // indirect
	github.com/libp2p/go-yamux/v5 v5.1.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

// The keytunnel module of this checkout; a program of your own requires a
// released version instead.
replace github.com/keytunnel/keytunnel => ../..
