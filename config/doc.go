// Package config reads keytunnel's TOML file: the entries one long-running
// `keytunnel up` process serves, and its global settings.
//
//	bootstrap = ["127.0.0.1:49737"]   # optional; default: the public HyperDHT nodes
//	log_level = "info"                # debug, info, warn, error
//	relay_through = ["<relay key>"]   # optional: blind relays every entry falls back to
//
//	[[expose]]
//	name  = "web"                     # unique; defaults to "expose-<port>"
//	port  = 8080                      # or: address = "10.0.0.5:8080"
//	key   = "web.key"                 # seed file, relative to this file
//	allow = ["<public key>", ...]     # optional: only these clients
//	raw   = false                     # hypertele/holesail wire mode
//	relay_through = ["<relay key>"]   # optional: this entry's relays ([] for none)
//	replace = false                   # true: take the key over from another live process
//	max_sessions = 32                 # optional caps on what peers may take (these are
//	max_streams_per_session = 100     # the defaults; see tunnel.Budget): concurrent
//	max_streams = 256                 # sessions, connections per peer, connections in
//	max_buffer_mib = 64               # all, MiB buffered for slow targets in all
//
//	[[forward]]
//	name   = "web"                    # unique; defaults to "forward-<port>"
//	key    = "<public key>"           # hex or z32
//	listen = "127.0.0.1:9000"         # or: port = 9000
//	raw    = false
//	relay_through = []                # optional, as for expose
//
// An [[expose]] entry whose key another live process already serves (a
// `keytunnel expose` or another `up` with the same key) does not start
// unless it has replace = true, as `expose --replace`.
//
// An entry's relay_through replaces the top-level list (which the global
// --relay-through flag replaces in turn) for that entry only.
//
// Parse reports every problem at once, each naming the file, line and field,
// and returns no configuration when there is any: a caller never starts half
// a file. Diff compares two parsed files entry by entry, which is what a
// SIGHUP reload applies.
package config
