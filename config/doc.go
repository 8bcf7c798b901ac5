// Package config reads keytunnel's TOML file: the entries one long-running
// `keytunnel up` process serves, and its global settings.
//
//	bootstrap = ["127.0.0.1:49737"]   # optional; default: the public HyperDHT nodes
//	log_level = "info"                # debug, info, warn, error
//	relay_through = ["<relay key>"]   # optional: blind relays every entry falls back to
//
//	[[expose]]
//	name  = "web"                     # unique; defaults to "expose-<port>"
//	port  = 8080                      # or: address = "10.0.0.5:8080" or "unix:/run/app.sock"
//	key   = "web.key"                 # seed file, relative to this file (or to up --key-dir)
//	                                  # or: secret_file = "web.secret" (private: see below)
//	allow = ["<public key>", ...]     # optional: only these clients
//	raw   = false                     # hypertele/holesail wire mode
//	holesail = false                  # publish holesail-server's record (port, protocol)
//	relay_through = ["<relay key>"]   # optional: this entry's relays ([] for none)
//	replace = false                   # true: take the key over from another live process
//	max_sessions = 32                 # optional caps on what peers may take (these are
//	max_streams_per_session = 100     # the defaults; see tunnel.Budget): concurrent
//	max_streams = 256                 # sessions, connections per peer, connections in
//	max_buffer_mib = 64               # all, MiB buffered for slow targets in all
//	udp = false                       # true: the target is a UDP service
//	udp_idle_timeout = "60s"          # udp only: a flow idle this long is dropped
//	max_flows = 1024                  # udp only: cap on open UDP flows
//
//	[expose.services.ssh]             # optional, repeatable: a named service of the entry
//	address = "127.0.0.1:22"          # or: port = 22
//	allow = ["<public key>", ...]     # optional: added to the entry's allow for this one
//	udp = false                       # true: a UDP service
//	default = false                   # true: the default service, when the entry has
//	                                  # no port or address of its own
//
//	[[forward]]
//	name   = "web"                    # unique; defaults to "forward-<port>"
//	key    = "<public key>"           # hex or z32, or holesail's hs://0000<key>
//	service = "ssh"                   # optional: a named service behind key
//	                                  # or: secret_file = "web.secret" (private)
//	listen = "127.0.0.1:9000"         # or: port = 9000
//	raw    = false                    # implied by hs:// and secret_file; with udp:
//	                                  # holesail's UDP framing
//	relay_through = []                # optional, as for expose
//	udp = false                       # true: listen on UDP, one flow per client address
//	udp_idle_timeout = "60s"          # udp only, as for expose
//	max_flows = 1024                  # udp only, as for expose
//
// secret_file names a file (mode 0600) holding a private connection string,
// hs://s000<secret> as `keytunnel expose --private` and holesail print it:
// an [[expose]] then serves under the key pair derived from it and admits
// only clients holding it, a [[forward]] dials with that key pair. A
// private string is never accepted inline (key = "hs://s000…"), since the
// file holding the configuration is often readable by others.
//
// An [[expose]] entry serves several services under its key with
// [expose.services.NAME] tables (or services = { NAME = { ... } }); names
// are 1 to 63 bytes of a-z, 0-9, '-', '_' and '.'. Its port or address, if
// it has one, is the default service (what clients without a service
// name, hypertele and holesail reach), else the service with default =
// true is. The entry's allow applies to every service, a service's own
// allow to it alone; a service with no allow at all is open. Clients
// reach a service with `keytunnel forward KEY/NAME` or a [[forward]]
// with service = "NAME" (not with raw, hs:// keys or secret_file, which
// speak raw mode, which cannot name a service).
//
// A relative unix: path, like a relative key path, is taken from the
// file's directory.
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
