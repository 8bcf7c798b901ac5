package rpc

import (
	"bytes"
	"encoding/hex"
	"net/netip"

	"github.com/keytunnel/keytunnel/internal/compact"
	"golang.org/x/crypto/blake2b"
)

// ID is a 32-byte DHT node id or lookup target.
type ID [32]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// NodeID returns the id the reference derives from a node's public
// address: BLAKE2b-256 of its 6-byte ipv4Address (4 address bytes, then
// the port little-endian).
func NodeID(addr netip.AddrPort) ID {
	var buf [6]byte
	return blake2b.Sum256(compact.AppendIPv4Address(buf[:0], addr))
}

// compareDistance orders a and b by XOR distance to target: negative when
// a is closer, as the reference's Query._compare (first differing byte).
func compareDistance(target, a, b *ID) int {
	for i := range a {
		if a[i] == b[i] {
			continue
		}
		return int(target[i]^a[i]) - int(target[i]^b[i])
	}
	return 0
}

// tokenSecrets holds the two rotating secrets tokens are derived from.
type tokenSecrets struct {
	s   [2][32]byte
	set bool
}

// token returns BLAKE2b-256(message = host as dotted text, key = secret i).
// The port is not part of the token.
func (t *tokenSecrets) token(host netip.Addr, i int, rnd func([]byte)) [32]byte {
	if !t.set {
		rnd(t.s[0][:])
		rnd(t.s[1][:])
		t.set = true
	}
	h, _ := blake2b.New256(t.s[i][:])
	h.Write([]byte(host.Unmap().String()))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// valid reports whether tok matches either current secret for host.
func (t *tokenSecrets) valid(host netip.Addr, tok *[32]byte, rnd func([]byte)) bool {
	a := t.token(host, 1, rnd)
	if bytes.Equal(a[:], tok[:]) {
		return true
	}
	b := t.token(host, 0, rnd)
	return bytes.Equal(b[:], tok[:])
}

// rotate swaps the secrets and replaces the new second one by its own
// hash, as the reference does every 10th drain (7.5 s).
func (t *tokenSecrets) rotate() {
	if !t.set {
		return
	}
	t.s[0], t.s[1] = t.s[1], t.s[0]
	t.s[1] = blake2b.Sum256(t.s[1][:])
}
