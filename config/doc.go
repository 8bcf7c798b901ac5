// Package config reads keytunnel's TOML file: the entries one long-running
// `keytunnel up` process serves, and its global settings.
//
//	bootstrap = ["127.0.0.1:49737"]   # optional; default: the public HyperDHT nodes
//	log_level = "info"                # debug, info, warn, error
//
//	[[expose]]
//	name  = "web"                     # unique; defaults to "expose-<port>"
//	port  = 8080                      # or: address = "10.0.0.5:8080"
//	key   = "web.key"                 # seed file, relative to this file
//	allow = ["<public key>", ...]     # optional: only these clients
//	raw   = false                     # hypertele/holesail wire mode
//
//	[[forward]]
//	name   = "web"                    # unique; defaults to "forward-<port>"
//	key    = "<public key>"           # hex or z32
//	listen = "127.0.0.1:9000"         # or: port = 9000
//	raw    = false
//
// Parse reports every problem at once, each naming the file, line and field,
// and returns no configuration when there is any: a caller never starts half
// a file. Diff compares two parsed files entry by entry, which is what a
// SIGHUP reload applies.
package config
