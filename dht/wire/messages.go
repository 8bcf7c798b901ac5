package wire

import (
	"fmt"
	"net/netip"

	"github.com/keytunnel/keytunnel/internal/compact"
	"github.com/keytunnel/keytunnel/internal/key"
)

// Numbers: Go decodes every uint exactly; Node reads values above 2^53
// as imprecise floats, so such values (which no real peer sends) may not
// mean the same thing on both sides.
//
// Notation in the layouts below: uint is compact-encoding's variable
// uint (1, 3, 5 or 9 bytes), buffer is uint length ‖ bytes, ipv4 is 4
// address bytes ‖ u16 LE port, ipv6 is 16 address bytes ‖ u16 LE port,
// T[] is uint count ‖ count × T. Decoded byte slices alias the input.

// decode runs f over b and reports the first error, wrapped in ErrDecode.
// Trailing bytes are accepted because compact-encoding's decode accepts
// them; rejecting them would make a Go node stricter than the network.
func decode[T any](name string, b []byte, f func(d *compact.Decoder) T) (T, error) {
	d := compact.NewDecoder(b)
	v := f(d)
	if err := d.Err(); err != nil {
		var zero T
		return zero, fmt.Errorf("%w: %s: %w", ErrDecode, name, err)
	}
	return v, nil
}

func appendIPv4s(b []byte, addrs []netip.AddrPort) []byte {
	b = compact.AppendUint(b, uint64(len(addrs)))
	for _, a := range addrs {
		b = compact.AppendIPv4Address(b, a)
	}
	return b
}

func appendIPv6s(b []byte, addrs []netip.AddrPort) []byte {
	b = compact.AppendUint(b, uint64(len(addrs)))
	for _, a := range addrs {
		b = compact.AppendIPv6Address(b, a)
	}
	return b
}

// readIPv4s returns a non-nil slice even when empty, so that fields whose
// flag means "present" (not "non-empty") round-trip.
func readIPv4s(d *compact.Decoder) []netip.AddrPort {
	n := d.ArrayLen(6, MaxArrayLen)
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = d.IPv4Address()
	}
	return out
}

func readIPv6s(d *compact.Decoder) []netip.AddrPort {
	n := d.ArrayLen(18, MaxArrayLen)
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = d.IPv6Address()
	}
	return out
}

func flag(cond bool, bit uint64) uint64 {
	if cond {
		return bit
	}
	return 0
}

// Handshake is the value of a PEER_HANDSHAKE request or reply.
//
//	uint   flags          bit0 peerAddress, bit1 relayAddress
//	uint   mode           Mode
//	buffer noise          a Noise IK handshake message
//	ipv4   peerAddress    if flags&1
//	ipv4   relayAddress   if flags&2
//
// An address is absent when it is the zero netip.AddrPort (0.0.0.0:0 is a
// valid, present address).
type Handshake struct {
	Mode         Mode
	Noise        []byte
	PeerAddress  netip.AddrPort
	RelayAddress netip.AddrPort
}

// Append appends the encoding of h.
func (h *Handshake) Append(b []byte) []byte {
	b = compact.AppendUint(b, flag(h.PeerAddress.IsValid(), 1)|flag(h.RelayAddress.IsValid(), 2))
	b = compact.AppendUint(b, uint64(h.Mode))
	b = compact.AppendBuffer(b, h.Noise)
	if h.PeerAddress.IsValid() {
		b = compact.AppendIPv4Address(b, h.PeerAddress)
	}
	if h.RelayAddress.IsValid() {
		b = compact.AppendIPv4Address(b, h.RelayAddress)
	}
	return b
}

// DecodeHandshake decodes a PEER_HANDSHAKE value.
func DecodeHandshake(b []byte) (Handshake, error) {
	return decode("handshake", b, func(d *compact.Decoder) (h Handshake) {
		flags := d.Uint()
		h.Mode = Mode(d.Uint())
		h.Noise = d.Buffer()
		if flags&1 != 0 {
			h.PeerAddress = d.IPv4Address()
		}
		if flags&2 != 0 {
			h.RelayAddress = d.IPv4Address()
		}
		return h
	})
}

// Holepunch is the value of a PEER_HOLEPUNCH request or reply.
//
//	uint   flags         bit0 peerAddress
//	uint   mode          Mode
//	uint   id            the server's holepunch slot
//	buffer payload       a secure payload (SecurePayload) around HolepunchPayload
//	ipv4   peerAddress   if flags&1
type Holepunch struct {
	Mode        Mode
	ID          uint64
	Payload     []byte
	PeerAddress netip.AddrPort
}

// Append appends the encoding of h.
func (h *Holepunch) Append(b []byte) []byte {
	b = compact.AppendUint(b, flag(h.PeerAddress.IsValid(), 1))
	b = compact.AppendUint(b, uint64(h.Mode))
	b = compact.AppendUint(b, h.ID)
	b = compact.AppendBuffer(b, h.Payload)
	if h.PeerAddress.IsValid() {
		b = compact.AppendIPv4Address(b, h.PeerAddress)
	}
	return b
}

// DecodeHolepunch decodes a PEER_HOLEPUNCH value.
func DecodeHolepunch(b []byte) (Holepunch, error) {
	return decode("holepunch", b, func(d *compact.Decoder) (h Holepunch) {
		flags := d.Uint()
		h.Mode = Mode(d.Uint())
		h.ID = d.Uint()
		h.Payload = d.Buffer()
		if flags&1 != 0 {
			h.PeerAddress = d.IPv4Address()
		}
		return h
	})
}

// RelayInfo is one relay a server can be holepunched through: the DHT node
// it announced to and the server's address as that node sees it.
//
//	ipv4 relayAddress ‖ ipv4 peerAddress   (12 bytes)
type RelayInfo struct {
	RelayAddress netip.AddrPort
	PeerAddress  netip.AddrPort
}

// HolepunchInfo says a server can be holepunched.
//
//	uint        id       the server's holepunch slot
//	RelayInfo[] relays
type HolepunchInfo struct {
	ID     uint64
	Relays []RelayInfo
}

// UDXInfo describes the sender's UDX stream.
//
//	uint version    always written as 1
//	uint features   bit0 reusableSocket (other bits are dropped on decode, as the reference does)
//	uint id         the sender's UDX stream id
//	uint seq        always 0 in practice
type UDXInfo struct {
	Version        uint64
	ReusableSocket bool
	ID             uint64
	Seq            uint64
}

// SecretStreamInfo says the sender speaks secret-stream.
//
//	uint version    always written as 1
type SecretStreamInfo struct {
	Version uint64
}

// RelayThroughInfo asks for a blind relay.
//
//	uint    version     always written as 1
//	uint    flags       always written as 0, ignored on decode
//	fixed32 publicKey   the blind-relay server's key
//	fixed32 token       the pairing token
type RelayThroughInfo struct {
	Version   uint64
	PublicKey key.PublicKey
	Token     [32]byte
}

// NoisePayload is the plaintext of both Noise handshake messages.
//
//	uint               version          always written as 1
//	uint               flags            bits below
//	uint               error            ErrorCode
//	uint               firewall         Firewall
//	HolepunchInfo      holepunch        if flags&1
//	ipv4[]             addresses4       if flags&2   (set only when non-empty)
//	ipv6[]             addresses6       if flags&4   (set only when non-empty)
//	UDXInfo            udx              if flags&8
//	SecretStreamInfo   secretStream     if flags&16
//	RelayThroughInfo   relayThrough     if flags&32
//	ipv4[]             relayAddresses   if flags&64  (set whenever non-nil, even if empty)
//
// A decoder that reads a version other than 1 stops there and returns the
// version with every other field at its default, so the server can still
// answer VERSION_MISMATCH. RelayAddresses distinguishes nil (absent) from
// empty (present) because the reference's flag does. As with
// HolepunchPayload, Node's encoder assumes error and firewall fit one byte.
type NoisePayload struct {
	Version        uint64
	Error          ErrorCode
	Firewall       Firewall
	Holepunch      *HolepunchInfo
	Addresses4     []netip.AddrPort
	Addresses6     []netip.AddrPort
	UDX            *UDXInfo
	SecretStream   *SecretStreamInfo
	RelayThrough   *RelayThroughInfo
	RelayAddresses []netip.AddrPort
}

// Append appends the encoding of p. Version is always written as 1, as the
// reference's encoder does.
func (p *NoisePayload) Append(b []byte) []byte {
	flags := flag(p.Holepunch != nil, 1) |
		flag(len(p.Addresses4) > 0, 2) |
		flag(len(p.Addresses6) > 0, 4) |
		flag(p.UDX != nil, 8) |
		flag(p.SecretStream != nil, 16) |
		flag(p.RelayThrough != nil, 32) |
		flag(p.RelayAddresses != nil, 64)
	b = compact.AppendUint(b, 1)
	b = compact.AppendUint(b, flags)
	b = compact.AppendUint(b, uint64(p.Error))
	b = compact.AppendUint(b, uint64(p.Firewall))
	if h := p.Holepunch; h != nil {
		b = compact.AppendUint(b, h.ID)
		b = compact.AppendUint(b, uint64(len(h.Relays)))
		for _, r := range h.Relays {
			b = compact.AppendIPv4Address(b, r.RelayAddress)
			b = compact.AppendIPv4Address(b, r.PeerAddress)
		}
	}
	if len(p.Addresses4) > 0 {
		b = appendIPv4s(b, p.Addresses4)
	}
	if len(p.Addresses6) > 0 {
		b = appendIPv6s(b, p.Addresses6)
	}
	if u := p.UDX; u != nil {
		b = compact.AppendUint(b, 1)
		b = compact.AppendUint(b, flag(u.ReusableSocket, 1))
		b = compact.AppendUint(b, u.ID)
		b = compact.AppendUint(b, u.Seq)
	}
	if p.SecretStream != nil {
		b = compact.AppendUint(b, 1)
	}
	if r := p.RelayThrough; r != nil {
		b = compact.AppendUint(b, 1)
		b = compact.AppendUint(b, 0)
		b = append(b, r.PublicKey[:]...)
		b = append(b, r.Token[:]...)
	}
	if p.RelayAddresses != nil {
		b = appendIPv4s(b, p.RelayAddresses)
	}
	return b
}

// DecodeNoisePayload decodes a Noise handshake payload.
func DecodeNoisePayload(b []byte) (NoisePayload, error) {
	return decode("noisePayload", b, func(d *compact.Decoder) (p NoisePayload) {
		p.Version = d.Uint()
		if p.Version != 1 {
			return p
		}
		flags := d.Uint()
		p.Error = ErrorCode(d.Uint())
		p.Firewall = Firewall(d.Uint())
		if flags&1 != 0 {
			h := &HolepunchInfo{ID: d.Uint()}
			h.Relays = make([]RelayInfo, d.ArrayLen(12, MaxArrayLen))
			for i := range h.Relays {
				h.Relays[i].RelayAddress = d.IPv4Address()
				h.Relays[i].PeerAddress = d.IPv4Address()
			}
			p.Holepunch = h
		}
		if flags&2 != 0 {
			p.Addresses4 = readIPv4s(d)
		}
		if flags&4 != 0 {
			p.Addresses6 = readIPv6s(d)
		}
		if flags&8 != 0 {
			u := &UDXInfo{Version: d.Uint()}
			u.ReusableSocket = d.Uint()&1 != 0
			u.ID = d.Uint()
			u.Seq = d.Uint()
			p.UDX = u
		}
		if flags&16 != 0 {
			p.SecretStream = &SecretStreamInfo{Version: d.Uint()}
		}
		if flags&32 != 0 {
			r := &RelayThroughInfo{Version: d.Uint()}
			d.Uint()
			r.PublicKey = d.Fixed32()
			r.Token = d.Fixed32()
			p.RelayThrough = r
		}
		if flags&64 != 0 {
			p.RelayAddresses = readIPv4s(d)
		}
		return p
	})
}

// HolepunchPayload is the plaintext inside a PEER_HOLEPUNCH secure payload.
//
//	uint     flags           bit0 connected, bit1 punching, bit2 addresses,
//	                         bit3 remoteAddress, bit4 token, bit5 remoteToken
//	uint     error           ErrorCode
//	uint     firewall        Firewall
//	uint     round
//	ipv4[]   addresses       if flags&4  (set whenever non-nil, even if empty)
//	ipv4     remoteAddress   if flags&8
//	fixed32  token           if flags&16
//	fixed32  remoteToken     if flags&32
//
// The reference's size estimate assumes flags, error, firewall and round
// take one byte each, so Node cannot encode a round (or error, firewall)
// of 0xfd or more: it throws or truncates. Go encodes any value correctly
// and Node decodes it fine; only Node-to-Node traffic is limited.
type HolepunchPayload struct {
	Error         ErrorCode
	Firewall      Firewall
	Round         uint64
	Connected     bool
	Punching      bool
	Addresses     []netip.AddrPort
	RemoteAddress netip.AddrPort
	Token         *[32]byte
	RemoteToken   *[32]byte
}

// Append appends the encoding of p.
func (p *HolepunchPayload) Append(b []byte) []byte {
	flags := flag(p.Connected, 1) | flag(p.Punching, 2) | flag(p.Addresses != nil, 4) |
		flag(p.RemoteAddress.IsValid(), 8) | flag(p.Token != nil, 16) | flag(p.RemoteToken != nil, 32)
	b = compact.AppendUint(b, flags)
	b = compact.AppendUint(b, uint64(p.Error))
	b = compact.AppendUint(b, uint64(p.Firewall))
	b = compact.AppendUint(b, p.Round)
	if p.Addresses != nil {
		b = appendIPv4s(b, p.Addresses)
	}
	if p.RemoteAddress.IsValid() {
		b = compact.AppendIPv4Address(b, p.RemoteAddress)
	}
	if p.Token != nil {
		b = append(b, p.Token[:]...)
	}
	if p.RemoteToken != nil {
		b = append(b, p.RemoteToken[:]...)
	}
	return b
}

// DecodeHolepunchPayload decodes a holepunch payload's plaintext.
func DecodeHolepunchPayload(b []byte) (HolepunchPayload, error) {
	return decode("holepunchPayload", b, func(d *compact.Decoder) (p HolepunchPayload) {
		flags := d.Uint()
		p.Error = ErrorCode(d.Uint())
		p.Firewall = Firewall(d.Uint())
		p.Round = d.Uint()
		p.Connected = flags&1 != 0
		p.Punching = flags&2 != 0
		if flags&4 != 0 {
			p.Addresses = readIPv4s(d)
		}
		if flags&8 != 0 {
			p.RemoteAddress = d.IPv4Address()
		}
		if flags&16 != 0 {
			t := d.Fixed32()
			p.Token = &t
		}
		if flags&32 != 0 {
			t := d.Fixed32()
			p.RemoteToken = &t
		}
		return p
	})
}

// Peer is an announce record: who to connect to and through which nodes.
//
//	fixed32  publicKey
//	ipv4[]   relayAddresses
type Peer struct {
	PublicKey      key.PublicKey
	RelayAddresses []netip.AddrPort
}

// Append appends the encoding of p.
func (p *Peer) Append(b []byte) []byte {
	b = append(b, p.PublicKey[:]...)
	return appendIPv4s(b, p.RelayAddresses)
}

func readPeer(d *compact.Decoder) (p Peer) {
	p.PublicKey = d.Fixed32()
	p.RelayAddresses = readIPv4s(d)
	return p
}

// DecodePeer decodes a peer record (a FIND_PEER reply value).
func DecodePeer(b []byte) (Peer, error) { return decode("peer", b, readPeer) }

// LookupRawReply is a LOOKUP reply value.
//
//	peer[]  peers   (stored records, written as they are stored)
//	uint    bump    optional on decode: 0 when no bytes remain
type LookupRawReply struct {
	Peers []Peer
	Bump  uint64
}

// Append appends the encoding of r.
func (r *LookupRawReply) Append(b []byte) []byte {
	b = compact.AppendUint(b, uint64(len(r.Peers)))
	for i := range r.Peers {
		b = r.Peers[i].Append(b)
	}
	return compact.AppendUint(b, r.Bump)
}

// AppendLookupRawReply appends a LOOKUP reply built from already encoded
// peer records, which is how a node stores them.
func AppendLookupRawReply(b []byte, records [][]byte, bump uint64) []byte {
	b = compact.AppendUint(b, uint64(len(records)))
	for _, r := range records {
		b = append(b, r...)
	}
	return compact.AppendUint(b, bump)
}

// DecodeLookupRawReply decodes a LOOKUP reply value.
func DecodeLookupRawReply(b []byte) (LookupRawReply, error) {
	return decode("lookupRawReply", b, func(d *compact.Decoder) (r LookupRawReply) {
		r.Peers = make([]Peer, d.ArrayLen(33, MaxArrayLen))
		for i := range r.Peers {
			r.Peers[i] = readPeer(d)
		}
		if d.Err() == nil && d.Len() > 0 {
			r.Bump = d.Uint()
		}
		return r
	})
}

// Announce is the value of ANNOUNCE and UNANNOUNCE.
//
//	uint     flags       bit0 peer, bit1 refresh, bit2 signature, bit3 bump
//	peer     peer        if flags&1
//	fixed32  refresh     if flags&2
//	fixed64  signature   if flags&4
//	uint     bump        if flags&8  (written only when non-zero)
type Announce struct {
	Peer      *Peer
	Refresh   *[32]byte
	Signature *[64]byte
	Bump      uint64
}

// Append appends the encoding of a.
func (a *Announce) Append(b []byte) []byte {
	b = compact.AppendUint(b, flag(a.Peer != nil, 1)|flag(a.Refresh != nil, 2)|flag(a.Signature != nil, 4)|flag(a.Bump != 0, 8))
	if a.Peer != nil {
		b = a.Peer.Append(b)
	}
	if a.Refresh != nil {
		b = append(b, a.Refresh[:]...)
	}
	if a.Signature != nil {
		b = append(b, a.Signature[:]...)
	}
	if a.Bump != 0 {
		b = compact.AppendUint(b, a.Bump)
	}
	return b
}

// DecodeAnnounce decodes an ANNOUNCE or UNANNOUNCE value.
func DecodeAnnounce(b []byte) (Announce, error) {
	return decode("announce", b, func(d *compact.Decoder) (a Announce) {
		flags := d.Uint()
		if flags&1 != 0 {
			p := readPeer(d)
			a.Peer = &p
		}
		if flags&2 != 0 {
			r := d.Fixed32()
			a.Refresh = &r
		}
		if flags&4 != 0 {
			s := d.Fixed64()
			a.Signature = &s
		}
		if flags&8 != 0 {
			a.Bump = d.Uint()
		}
		return a
	})
}

// AppendMutableSignable appends what a mutable signature covers (hashed):
//
//	uint seq ‖ buffer value
func AppendMutableSignable(b []byte, seq uint64, value []byte) []byte {
	return compact.AppendBuffer(compact.AppendUint(b, seq), value)
}

// MutablePutRequest is the value of MUTABLE_PUT.
//
//	fixed32  publicKey
//	uint     seq
//	buffer   value
//	fixed64  signature
type MutablePutRequest struct {
	PublicKey key.PublicKey
	Seq       uint64
	Value     []byte
	Signature [64]byte
}

// Append appends the encoding of r.
func (r *MutablePutRequest) Append(b []byte) []byte {
	b = append(b, r.PublicKey[:]...)
	b = AppendMutableSignable(b, r.Seq, r.Value)
	return append(b, r.Signature[:]...)
}

// DecodeMutablePutRequest decodes a MUTABLE_PUT value.
func DecodeMutablePutRequest(b []byte) (MutablePutRequest, error) {
	return decode("mutablePutRequest", b, func(d *compact.Decoder) (r MutablePutRequest) {
		r.PublicKey = d.Fixed32()
		r.Seq = d.Uint()
		r.Value = d.Buffer()
		r.Signature = d.Fixed64()
		return r
	})
}

// MutableGetResponse is a MUTABLE_GET reply value, and the form a node
// stores mutable records in.
//
//	uint     seq
//	buffer   value
//	fixed64  signature
type MutableGetResponse struct {
	Seq       uint64
	Value     []byte
	Signature [64]byte
}

// Append appends the encoding of r.
func (r *MutableGetResponse) Append(b []byte) []byte {
	b = AppendMutableSignable(b, r.Seq, r.Value)
	return append(b, r.Signature[:]...)
}

// DecodeMutableGetResponse decodes a MUTABLE_GET reply value.
func DecodeMutableGetResponse(b []byte) (MutableGetResponse, error) {
	return decode("mutableGetResponse", b, func(d *compact.Decoder) (r MutableGetResponse) {
		r.Seq = d.Uint()
		r.Value = d.Buffer()
		r.Signature = d.Fixed64()
		return r
	})
}

// AppendMutableGetRequest appends a MUTABLE_GET request value: the lowest
// seq the asker wants, as a bare uint.
func AppendMutableGetRequest(b []byte, seq uint64) []byte { return compact.AppendUint(b, seq) }

// DecodeMutableGetRequest decodes a MUTABLE_GET request value.
func DecodeMutableGetRequest(b []byte) (uint64, error) {
	return decode("mutableGetRequest", b, func(d *compact.Decoder) uint64 { return d.Uint() })
}

// PluginRequest is the value of PLUGIN.
//
//	buffer  plugin    (a UTF-8 string)
//	uint    version
//	uint    command
//	uint    flags     bit0 value
//	buffer  value     if flags&1
//
// Value nil means absent; a non-nil empty Value is present, as an empty
// Buffer is in the reference.
type PluginRequest struct {
	Plugin  string
	Version uint64
	Command uint64
	Value   []byte
}

// Append appends the encoding of r.
func (r *PluginRequest) Append(b []byte) []byte {
	b = compact.AppendString(b, r.Plugin)
	b = compact.AppendUint(b, r.Version)
	b = compact.AppendUint(b, r.Command)
	b = compact.AppendUint(b, flag(r.Value != nil, 1))
	if r.Value != nil {
		b = compact.AppendBuffer(b, r.Value)
	}
	return b
}

// DecodePluginRequest decodes a PLUGIN value.
func DecodePluginRequest(b []byte) (PluginRequest, error) {
	return decode("pluginRequest", b, func(d *compact.Decoder) (r PluginRequest) {
		r.Plugin = d.String()
		r.Version = d.Uint()
		r.Command = d.Uint()
		if d.Uint()&1 != 0 {
			r.Value = d.Buffer()
		}
		return r
	})
}

// Address is a hyperdht-address: a server key with optional nodes to try
// first (the hyperdht-address package, schema version 2).
//
//	fixed32  key
//	uint     flags   bit0 nodes; optional at the end of input
//	ipv4[]   nodes   if flags&1
//
// Nodes nil means absent; non-nil empty is written with the flag set.
type Address struct {
	Key   key.PublicKey
	Nodes []netip.AddrPort
}

// Append appends the encoding of a.
func (a *Address) Append(b []byte) []byte {
	b = append(b, a.Key[:]...)
	b = compact.AppendUint(b, flag(a.Nodes != nil, 1))
	if a.Nodes != nil {
		b = appendIPv4s(b, a.Nodes)
	}
	return b
}

// DecodeAddress decodes a hyperdht-address.
func DecodeAddress(b []byte) (Address, error) {
	return decode("hyperdht-address", b, func(d *compact.Decoder) (a Address) {
		a.Key = d.Fixed32()
		if d.Err() == nil && d.Len() > 0 && d.Uint()&1 != 0 {
			a.Nodes = readIPv4s(d)
		}
		return a
	})
}
