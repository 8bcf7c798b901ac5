// Package holesail reads and writes what keytunnel shares with holesail
// (npm holesail 2.4, holesail-server, holesail-client): its connection
// strings, the key pair of its private ("secure") mode, and the DHT record
// its servers publish.
//
// # Connection strings
//
// holesail 2.4's Holesail.urlParser takes "hs://" followed by four flag
// characters and the key; the first flag is "s" for a private string,
// anything else (holesail writes "0000") for a public one. Parse reads:
//
//	hs://0000<key>      public: key is the service's public key (holesail
//	                    writes 52 z-base-32 characters; 64 hex are read too)
//	hs://s000<secret>   private: the key pair's seed is SHA-256(secret)
//	<key>               public, bare: 52 z-base-32 or 64 hex characters
//	<secret>            private, bare, only when the caller says so (Parse's
//	                    private argument; holesail's secure option): a
//	                    string of 52 z-base-32 characters is a seed itself,
//	                    as holesail-client and holesail-server print and
//	                    read it in secure mode; any other string is a
//	                    secret, hashed as above.
//
// urlParser also calls a bare string private when its sixth character is
// "s"; Parse does not, since one z-base-32 public key in 32 would be
// misread that way.
//
// # Private mode
//
// In private mode both ends use one key pair, derived from the secret: the
// server listens on it and its firewall admits only connections whose
// client key is that same public key (holesail-server's privateFirewall),
// and the client dials with it as its own identity. Whoever holds the
// string can connect; nobody else can, even knowing the public key.
//
// # The record
//
// holesail-server puts a mutable record under its key pair (signed by it,
// so stored under H(public key)): the UTF-8 JSON
// {"host":HOST,"udp":BOOL,"port":PORT}. holesail-client reads it to pick
// its local listen address and protocol when it is not told them. Record
// and ParseRecord write and read that value, with one field of
// keytunnel's own that holesail ignores ("keytunnel": the protocol a
// keytunnel expose speaks besides holesail's raw streams).
package holesail
