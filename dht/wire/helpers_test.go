package wire

import (
	"math/rand/v2"
	"net/netip"

	"golang.org/x/crypto/blake2b"
)

func blakeSum(b []byte) [32]byte { return blake2b.Sum256(b) }

// addL returns the 32-byte little-endian s + L, L the Ed25519 group order.
func addL(s []byte) []byte {
	l := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 31: 0x10}
	out := make([]byte, 32)
	carry := 0
	for i := range out {
		v := int(s[i]) + int(l[i]) + carry
		out[i] = byte(v)
		carry = v >> 8
	}
	return out
}

// Values Node's number-based encoder represents exactly; fields the
// reference's preencode assumes to fit one byte stay below 0xfd.
var randUints = []uint64{0, 1, 7, 0xfc, 0xfd, 0xffff, 0x10000, 0xffffffff, 1 << 32, 1 << 40, 1<<53 - 1}

func rUint(r *rand.Rand) uint64  { return randUints[r.IntN(len(randUints))] }
func rSmall(r *rand.Rand) uint64 { return uint64(r.IntN(0xfd)) }
func rBool(r *rand.Rand) bool    { return r.IntN(2) == 0 }

func rBytes(r *rand.Rand, max int) []byte {
	b := make([]byte, r.IntN(max+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func r32(r *rand.Rand) (b [32]byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func r64(r *rand.Rand) (b [64]byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func rAddr4(r *rand.Rand) netip.AddrPort {
	var a [4]byte
	for i := range a {
		a[i] = byte(r.Uint32())
	}
	return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(r.Uint32()))
}

func rAddr6(r *rand.Rand) netip.AddrPort {
	var a [16]byte
	for i := range a {
		a[i] = byte(r.Uint32())
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(r.Uint32()))
}

// rAddrs returns nil, empty or a few addresses.
func rAddrs(r *rand.Rand, six bool) []netip.AddrPort {
	n := r.IntN(5) - 1
	if n < 0 {
		return nil
	}
	out := make([]netip.AddrPort, n)
	for i := range out {
		if six {
			out[i] = rAddr6(r)
		} else {
			out[i] = rAddr4(r)
		}
	}
	return out
}

func rOptAddr(r *rand.Rand) netip.AddrPort {
	if rBool(r) {
		return netip.AddrPort{}
	}
	return rAddr4(r)
}

func rPeer(r *rand.Rand) Peer {
	p := Peer{PublicKey: r32(r), RelayAddresses: rAddrs(r, false)}
	if p.RelayAddresses == nil {
		p.RelayAddresses = []netip.AddrPort{}
	}
	return p
}

// randomMessage returns a random valid message and its encoding's name.
func randomMessage(r *rand.Rand) (string, message) {
	switch r.IntN(11) {
	case 0:
		return "handshake", &Handshake{Mode: Mode(rSmall(r)), Noise: rBytes(r, 120), PeerAddress: rOptAddr(r), RelayAddress: rOptAddr(r)}
	case 1:
		return "holepunch", &Holepunch{Mode: Mode(rSmall(r)), ID: rUint(r), Payload: rBytes(r, 80), PeerAddress: rOptAddr(r)}
	case 2:
		p := &NoisePayload{Error: ErrorCode(rSmall(r)), Firewall: Firewall(rSmall(r)),
			Addresses4: rAddrs(r, false), Addresses6: rAddrs(r, true), RelayAddresses: rAddrs(r, false)}
		if rBool(r) {
			h := &HolepunchInfo{ID: rUint(r), Relays: []RelayInfo{}}
			for range r.IntN(3) {
				h.Relays = append(h.Relays, RelayInfo{rAddr4(r), rAddr4(r)})
			}
			p.Holepunch = h
		}
		if rBool(r) {
			p.UDX = &UDXInfo{Version: 1, ReusableSocket: rBool(r), ID: rUint(r), Seq: rUint(r)}
		}
		if rBool(r) {
			p.SecretStream = &SecretStreamInfo{Version: 1}
		}
		if rBool(r) {
			p.RelayThrough = &RelayThroughInfo{Version: 1, PublicKey: r32(r), Token: r32(r)}
		}
		return "noisePayload", p
	case 3:
		p := &HolepunchPayload{Error: ErrorCode(rSmall(r)), Firewall: Firewall(rSmall(r)), Round: rSmall(r),
			Connected: rBool(r), Punching: rBool(r), Addresses: rAddrs(r, false), RemoteAddress: rOptAddr(r)}
		if rBool(r) {
			p.Token = ptr(r32(r))
		}
		if rBool(r) {
			p.RemoteToken = ptr(r32(r))
		}
		return "holepunchPayload", p
	case 4:
		p := rPeer(r)
		return "peer", &p
	case 5:
		l := &LookupRawReply{Bump: rUint(r)}
		for range r.IntN(4) {
			l.Peers = append(l.Peers, rPeer(r))
		}
		return "lookupRawReply", l
	case 6:
		a := &Announce{}
		if rBool(r) {
			p := rPeer(r)
			a.Peer = &p
		}
		if rBool(r) {
			a.Refresh = ptr(r32(r))
		}
		if rBool(r) {
			a.Signature = ptr(r64(r))
		}
		if rBool(r) {
			a.Bump = rUint(r)
		}
		return "announce", a
	case 7:
		return "mutablePutRequest", &MutablePutRequest{PublicKey: r32(r), Seq: rUint(r), Value: rBytes(r, 300), Signature: r64(r)}
	case 8:
		return "mutableGetResponse", &MutableGetResponse{Seq: rUint(r), Value: rBytes(r, 300), Signature: r64(r)}
	case 9:
		p := &PluginRequest{Plugin: []string{"", "a", "dht-stats", "ünï"}[r.IntN(4)], Version: rUint(r), Command: rUint(r)}
		if rBool(r) {
			p.Value = rBytes(r, 20)
		}
		return "pluginRequest", p
	default:
		return "address", &Address{Key: r32(r), Nodes: rAddrs(r, false)}
	}
}

// mutate damages an encoding a little: cut it, change a byte to a small
// value (flags and counts), or add a byte.
func mutate(r *rand.Rand, b []byte) []byte {
	switch r.IntN(3) {
	case 0:
		return b[:r.IntN(len(b)+1)]
	case 1:
		if len(b) > 0 {
			b[r.IntN(len(b))] = byte(r.IntN(8))
		}
		return b
	default:
		return append(b, byte(r.IntN(8)))
	}
}
