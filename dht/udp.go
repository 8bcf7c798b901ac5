package dht

import (
	"net"
	"os"
	"strings"
)

// ListenUDP binds a UDP socket on 0.0.0.0:port (0 picks a free port), for
// callers that want a node on a plain socket. dht-rpc speaks IPv4 only.
func ListenUDP(port int) (*net.UDPConn, error) {
	return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: port})
}

// BootstrapEnv names the variable BootstrapFromEnv reads.
const BootstrapEnv = "KEYTUNNEL_BOOTSTRAP"

// BootstrapFromEnv returns the bootstrap list in $KEYTUNNEL_BOOTSTRAP
// (host:port, comma-separated), or nil when it is unset, which Config
// reads as DefaultBootstrap. Set but empty (or only commas) gives a
// non-nil empty list: no bootstrap at all, for a first node.
func BootstrapFromEnv() []string {
	v, ok := os.LookupEnv(BootstrapEnv)
	if !ok {
		return nil
	}
	out := []string{}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
