package dhtrelay

import (
	"fmt"
	"net/netip"

	"github.com/keytunnel/keytunnel/internal/compact"
	"github.com/keytunnel/keytunnel/internal/key"
)

// NodeAddr is a DHT node as dht-relay's `node` codec writes it.
//
//	id    buffer  the node id; 00 = none (compact-encoding 2.x null)
//	host  [4]     IPv4
//	port  u16le
type NodeAddr struct {
	ID      []byte // nil when absent
	Address netip.AddrPort
}

// Peer is a record's peer as dht-relay's `peer` codec writes it (the
// hyperdht peer record).
//
//	publicKey       [32]
//	relayAddresses  array  uint count ‖ count × (ip[4] port u16le)
type Peer struct {
	PublicKey      key.PublicKey
	RelayAddresses []netip.AddrPort
}

// AppendPeer appends p in the `peer` layout. hyperdht signs its announce
// records over this encoding, so a non-custodial client needs it to build
// the signable of a SignAnnounce.
func AppendPeer(b []byte, p Peer) []byte {
	b = append(b, p.PublicKey[:]...)
	return appendIPv4Array(b, p.RelayAddresses)
}

// Announcers is one query reply, the `data` of a Result message
// (dht-relay's `announcers` codec). hyperdht's reply carries more (bump);
// only these fields cross the relay.
//
//	token  [32]
//	from   node   (see NodeAddr)
//	to     node
//	peers  array  uint count ‖ count × peer (see Peer)
type Announcers struct {
	Token [32]byte
	From  NodeAddr
	To    NodeAddr
	Peers []Peer
}

// Append appends a in the `announcers` layout.
func (a Announcers) Append(b []byte) []byte {
	b = append(b, a.Token[:]...)
	b = appendNode(b, a.From)
	b = appendNode(b, a.To)
	b = compact.AppendUint(b, uint64(len(a.Peers)))
	for _, p := range a.Peers {
		b = AppendPeer(b, p)
	}
	return b
}

func appendNode(b []byte, n NodeAddr) []byte {
	return compact.AppendIPv4Address(compact.AppendBuffer(b, n.ID), n.Address)
}

// DecodeAnnouncers decodes a Result's data. Trailing bytes are ignored, as
// by the reference's decoder. Slices alias b.
func DecodeAnnouncers(b []byte) (Announcers, error) {
	d := compact.NewDecoder(b)
	var a Announcers
	a.Token = d.Fixed32()
	a.From = decodeNode(d)
	a.To = decodeNode(d)
	if n := d.ArrayLen(33, maxArray); n > 0 { // a peer is at least 32 + 1 bytes
		a.Peers = make([]Peer, n)
		for i := range a.Peers {
			a.Peers[i] = Peer{PublicKey: d.Fixed32(), RelayAddresses: decodeIPv4Array(d)}
		}
	}
	if err := d.Err(); err != nil {
		return Announcers{}, fmt.Errorf("%w: announcers: %w", ErrMalformed, err)
	}
	return a, nil
}

func decodeNode(d *compact.Decoder) NodeAddr {
	return NodeAddr{ID: d.OptionalBuffer(), Address: d.IPv4Address()}
}

// DecodePeer decodes a `peer`. Trailing bytes are ignored.
func DecodePeer(b []byte) (Peer, error) {
	d := compact.NewDecoder(b)
	p := Peer{PublicKey: d.Fixed32(), RelayAddresses: decodeIPv4Array(d)}
	if err := d.Err(); err != nil {
		return Peer{}, fmt.Errorf("%w: peer: %w", ErrMalformed, err)
	}
	return p, nil
}
