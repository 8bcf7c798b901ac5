package dhtrelay

import (
	"fmt"
	"net/netip"

	"github.com/keytunnel/keytunnel/internal/compact"
	"github.com/keytunnel/keytunnel/internal/key"
)

// Type is a message's protomux type id on the "@hyperswarm/dht-relay"
// channel: its index in the reference's addMessage order (lib/protocol.js).
type Type uint8

// The message types, in wire order.
const (
	TypeHandshake      Type = 0
	TypePing           Type = 1
	TypePong           Type = 2
	TypeConnect        Type = 3
	TypeConnection     Type = 4
	TypeConnected      Type = 5
	TypeIncoming       Type = 6
	TypeDeny           Type = 7
	TypeAccept         Type = 8
	TypeDestroy        Type = 9
	TypeListen         Type = 10
	TypeListening      Type = 11
	TypeClose          Type = 12
	TypeClosed         Type = 13
	TypeOpen           Type = 14
	TypeEnd            Type = 15
	TypeData           Type = 16
	TypeResult         Type = 17
	TypeFinished       Type = 18
	TypeLookup         Type = 19
	TypeAnnounce       Type = 20
	TypeUnannounce     Type = 21
	TypeSignAnnounce   Type = 22
	TypeSignUnannounce Type = 23
	TypeSignature      Type = 24
	TypeNoiseSend      Type = 25
	TypeNoiseReceive   Type = 26
	TypeNoiseReply     Type = 27

	// NumTypes is the number of message types; valid types are below it.
	NumTypes = 28
)

var typeNames = [NumTypes]string{
	"handshake", "ping", "pong", "connect", "connection", "connected",
	"incoming", "deny", "accept", "destroy", "listen", "listening", "close",
	"closed", "open", "end", "data", "result", "finished", "lookup",
	"announce", "unannounce", "signAnnounce", "signUnannounce", "signature",
	"noiseSend", "noiseReceive", "noiseReply",
}

// String returns the reference's name of the message (lib/messages.js).
func (t Type) String() string {
	if t < NumTypes {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// SecretKey is a libsodium Ed25519 secret key, seed(32) ‖ public key(32):
// the layout of Go's ed25519.PrivateKey and of key.KeyPair.Private. Only
// custodial messages carry one.
type SecretKey [64]byte

// Hash is a Noise handshake hash (BLAKE2b-512), as custodial open and
// connection messages carry it.
type Hash [64]byte

// Message is one message of the protocol. AppendBody appends the body that
// follows "uint(channel) uint(type)" in the protomux frame; DecodeMessage
// is the inverse.
//
// Flag bytes: several bodies start with one raw byte of flags (not a
// varint; the reference writes state.buffer[s] directly). Bits the
// reference does not define are ignored when decoding and never sent.
//
// Trailing bytes after the last field are ignored when decoding, as the
// reference's compact-encoding decoders ignore them inside a protomux
// message.
type Message interface {
	Type() Type
	AppendBody(b []byte) []byte
}

// Flag bits.
const (
	flagCustodial   = 1 << 0 // handshake, connect, connection, listen, open, announce
	flagPaired      = 1 << 0 // destroy
	flagError       = 1 << 1 // destroy
	flagIsInitiator = 1 << 0 // noiseSend, noiseReceive, noiseReply
	flagComplete    = 1 << 1 // noiseReply
)

// maxArray is the reference's array bound (compact-encoding 2.x throws
// "Array is too big" above 0x100000 elements).
const maxArray = 0x100000

func flag(v bool, bit byte) byte {
	if v {
		return bit
	}
	return 0
}

// Handshake (type 0), client → relay, the first message of a session.
//
//	flags      u8        bit0 custodial
//	publicKey  [32]      the client's default key pair
//	secretKey  [64]      only if custodial
//
// Non-custodial example: 00 ‖ publicKey.
type Handshake struct {
	Custodial bool
	PublicKey key.PublicKey
	SecretKey SecretKey // sent only when Custodial
}

// Ping (type 1), relay → client, every 15 s: an empty body.
type Ping struct{}

// Pong (type 2), the answer to Ping: an empty body.
type Pong struct{}

// Connect (type 3), client → relay: open a stream to RemotePublicKey.
//
//	flags            u8      bit0 custodial
//	alias            u32le   the client's alias for the new stream
//	publicKey        [32]    the key pair to connect with
//	secretKey        [64]    only if custodial
//	remotePublicKey  [32]
type Connect struct {
	Custodial       bool
	Alias           uint32
	PublicKey       key.PublicKey
	SecretKey       SecretKey // sent only when Custodial
	RemotePublicKey key.PublicKey
}

// Connection (type 4), relay → client: a peer connected to one of the
// client's servers.
//
//	flags            u8      bit0 custodial
//	alias            u32le   the relay's alias for the stream
//	serverAlias      u32le   the relay's alias for the server (from listening)
//	remotePublicKey  [32]
//	handshakeHash    [64]    if custodial, else:
//	handshakeId      u32le   the noiseReceive/noiseSend id of the handshake
type Connection struct {
	Custodial       bool
	Alias           uint32
	ServerAlias     uint32
	RemotePublicKey key.PublicKey
	HandshakeHash   Hash   // only when Custodial
	HandshakeID     uint32 // only when !Custodial
}

// Connected (type 5), client → relay, the answer to Connection.
//
//	alias        u32le   the client's alias for the stream
//	remoteAlias  u32le   the relay's alias, from Connection
type Connected struct {
	Alias       uint32
	RemoteAlias uint32
}

// Incoming (type 6), relay → client: the firewall question of a custodial
// server. Answered by Accept or Deny with the same id.
//
//	id               u32le
//	serverAlias      u32le   the relay's server alias
//	remotePublicKey  [32]
//	payload          buffer  uint length ‖ bytes: hyperdht's noisePayload of
//	                         the connecting peer (00 = empty)
type Incoming struct {
	ID              uint32
	ServerAlias     uint32
	RemotePublicKey key.PublicKey
	Payload         []byte
}

// Deny (type 7), client → relay: refuse the Incoming with this id.
//
//	id  u32le
type Deny struct{ ID uint32 }

// Accept (type 8), client → relay: admit the Incoming with this id.
//
//	id  u32le
type Accept struct{ ID uint32 }

// Destroy (type 9), both directions: abort a stream.
//
//	flags        u8      bit0 paired, bit1 error present
//	alias        u32le   if paired: the sender's alias of the stream
//	remoteAlias  u32le   if not paired: the receiver's alias of a stream
//	                     that is still connecting (from connect)
//	error        string  uint length ‖ UTF-8, if bit1
//
// Example: 03 05000000 04 626f6f6d = paired, alias 5, error "boom".
type Destroy struct {
	Paired      bool
	Alias       uint32 // sent only when Paired
	RemoteAlias uint32 // sent only when !Paired
	// Error is the reason; "" sends none (the reference tests
	// `if (m.error)`, so an empty message is never sent either).
	// Received bytes are kept as they are, also when they are not valid
	// UTF-8 (Node would decode those with U+FFFD replacements); sanitise
	// before display.
	Error string
}

// Listen (type 10), client → relay: start a server.
//
//	flags      u8      bit0 custodial
//	alias      u32le   the client's alias for the server
//	publicKey  [32]    the server's key pair
//	secretKey  [64]    only if custodial
type Listen struct {
	Custodial bool
	Alias     uint32
	PublicKey key.PublicKey
	SecretKey SecretKey // sent only when Custodial
}

// Listening (type 11), relay → client: the server is announced.
//
//	alias        u32le   the relay's alias for the server
//	remoteAlias  u32le   the client's alias, from Listen
//	host         [4]     the relay DHT node's IPv4 address
//	port         u16le
//
// Example: 02000000 03000000 01020304 49c2 = alias 2, remote 3, 1.2.3.4:49737.
type Listening struct {
	Alias       uint32
	RemoteAlias uint32
	Address     netip.AddrPort // IPv4
}

// Close (type 12), client → relay: stop a server.
//
//	alias  u32le   the client's server alias
type Close struct{ Alias uint32 }

// Closed (type 13), relay → client: a server stopped.
//
//	alias  u32le   the relay's server alias
type Closed struct{ Alias uint32 }

// Open (type 14), relay → client: an outgoing stream (from Connect) is
// connected.
//
//	flags          u8      bit0 custodial
//	alias          u32le   the relay's alias for the stream
//	remoteAlias    u32le   the client's alias, from Connect
//	handshakeHash  [64]    if custodial, else:
//	handshakeId    u32le
type Open struct {
	Custodial     bool
	Alias         uint32
	RemoteAlias   uint32
	HandshakeHash Hash   // only when Custodial
	HandshakeID   uint32 // only when !Custodial
}

// End (type 15), both directions: half-close a stream.
//
//	alias  u32le   the sender's alias of the stream
type End struct{ Alias uint32 }

// Data (type 16), both directions: stream bytes. Custodial streams carry
// plaintext; non-custodial ones carry secret-stream frames, which only the
// client can decrypt.
//
//	alias   u32le   the sender's alias of the stream
//	chunks  array   uint count ‖ count × buffer (uint length ‖ bytes)
//
// Example: 02000000 02 02 6869 00 = alias 2, chunks "hi" and "".
type Data struct {
	Alias  uint32
	Chunks [][]byte
}

// Result (type 17), relay → client: one reply of a lookup, announce or
// unannounce query.
//
//	id    u32le
//	data  buffer  an Announcers record (see Announcers)
type Result struct {
	ID   uint32
	Data []byte
}

// Finished (type 18), relay → client: the query ended.
//
//	id  u32le
type Finished struct{ ID uint32 }

// Lookup (type 19), client → relay: find the peers announced on Topic.
//
//	id     u32le   the client's query id
//	topic  [32]
type Lookup struct {
	ID    uint32
	Topic [32]byte
}

// Announce (type 20), client → relay: announce PublicKey on Topic.
//
//	flags      u8      bit0 custodial
//	id         u32le   the client's query id
//	topic      [32]
//	publicKey  [32]
//	secretKey  [64]    only if custodial
type Announce struct {
	Custodial bool
	ID        uint32
	Topic     [32]byte
	PublicKey key.PublicKey
	SecretKey SecretKey // sent only when Custodial
}

// Unannounce (type 21), client → relay: the same layout as Announce.
type Unannounce Announce

// SignAnnounce (type 22), relay → client: sign an announce record
// (non-custodial). Answered by Signature with the same id.
//
//	id              u32le
//	signee          u32le   the query id of an announce, or a server alias
//	token           [32]    the storing node's token
//	peerId          buffer  the storing node's id; 00 = none
//	relayAddresses  array   uint count ‖ count × (ip[4] port u16le)
type SignAnnounce struct {
	ID             uint32
	Signee         uint32
	Token          [32]byte
	PeerID         []byte // nil when absent
	RelayAddresses []netip.AddrPort
}

// SignUnannounce (type 23), relay → client: the same layout as
// SignAnnounce, for an unannounce record.
type SignUnannounce SignAnnounce

// Signature (type 24), client → relay: the answer to SignAnnounce or
// SignUnannounce.
//
//	id         u32le
//	signature  buffer  uint length ‖ bytes (an Ed25519 signature, 64 bytes)
type Signature struct {
	ID        uint32
	Signature []byte
}

// NoiseSend (type 25), relay → client (non-custodial): write the next
// Noise message of handshake ID, carrying Payload.
//
//	flags              u8      bit0 isInitiator
//	id                 u32le   the relay's handshake id
//	remoteStreamAlias  u32le   only if isInitiator: the client's alias from connect
//	payload            buffer  an encoded hyperdht noisePayload
type NoiseSend struct {
	IsInitiator       bool
	ID                uint32
	RemoteStreamAlias uint32 // only when IsInitiator
	Payload           []byte
}

// NoiseReceive (type 26), relay → client (non-custodial): read a received
// Noise message of handshake ID.
//
//	flags        u8      bit0 isInitiator
//	id           u32le
//	serverAlias  u32le   only if not isInitiator: the relay's server alias
//	payload      buffer  the Noise message
type NoiseReceive struct {
	IsInitiator bool
	ID          uint32
	ServerAlias uint32 // only when !IsInitiator
	Payload     []byte
}

// NoiseReply (type 27), client → relay: the result of a NoiseSend or
// NoiseReceive.
//
//	flags            u8      bit0 isInitiator, bit1 complete
//	id               u32le
//	payload          buffer  after send: the Noise message; after receive:
//	                         the decrypted noisePayload (empty = denied)
//	remotePublicKey  [32]    only if !isInitiator && !complete
//	remoteId         [32]    only if complete
//	holepunchSecret  [32]    only if complete
type NoiseReply struct {
	IsInitiator     bool
	Complete        bool
	ID              uint32
	Payload         []byte
	RemotePublicKey key.PublicKey // only when !IsInitiator && !Complete
	RemoteID        [32]byte      // only when Complete
	HolepunchSecret [32]byte      // only when Complete
}

// Type methods.

func (Handshake) Type() Type      { return TypeHandshake }
func (Ping) Type() Type           { return TypePing }
func (Pong) Type() Type           { return TypePong }
func (Connect) Type() Type        { return TypeConnect }
func (Connection) Type() Type     { return TypeConnection }
func (Connected) Type() Type      { return TypeConnected }
func (Incoming) Type() Type       { return TypeIncoming }
func (Deny) Type() Type           { return TypeDeny }
func (Accept) Type() Type         { return TypeAccept }
func (Destroy) Type() Type        { return TypeDestroy }
func (Listen) Type() Type         { return TypeListen }
func (Listening) Type() Type      { return TypeListening }
func (Close) Type() Type          { return TypeClose }
func (Closed) Type() Type         { return TypeClosed }
func (Open) Type() Type           { return TypeOpen }
func (End) Type() Type            { return TypeEnd }
func (Data) Type() Type           { return TypeData }
func (Result) Type() Type         { return TypeResult }
func (Finished) Type() Type       { return TypeFinished }
func (Lookup) Type() Type         { return TypeLookup }
func (Announce) Type() Type       { return TypeAnnounce }
func (Unannounce) Type() Type     { return TypeUnannounce }
func (SignAnnounce) Type() Type   { return TypeSignAnnounce }
func (SignUnannounce) Type() Type { return TypeSignUnannounce }
func (Signature) Type() Type      { return TypeSignature }
func (NoiseSend) Type() Type      { return TypeNoiseSend }
func (NoiseReceive) Type() Type   { return TypeNoiseReceive }
func (NoiseReply) Type() Type     { return TypeNoiseReply }

// Encoders. Each appends the body exactly as the reference's encode does.

func appendID(b []byte, id uint32) []byte { return compact.AppendUint32(b, id) }

// appendKeys appends publicKey and, when custodial, secretKey: the tail
// shared by handshake, listen and announce.
func appendKeys(b []byte, custodial bool, pk *key.PublicKey, sk *SecretKey) []byte {
	b = append(b, pk[:]...)
	if custodial {
		b = append(b, sk[:]...)
	}
	return b
}

// appendHandshakeRef appends the custodial handshake hash or the
// non-custodial handshake id (connection, open).
func appendHandshakeRef(b []byte, custodial bool, h *Hash, id uint32) []byte {
	if custodial {
		return append(b, h[:]...)
	}
	return appendID(b, id)
}

func (m Handshake) AppendBody(b []byte) []byte {
	b = append(b, flag(m.Custodial, flagCustodial))
	return appendKeys(b, m.Custodial, &m.PublicKey, &m.SecretKey)
}

func (Ping) AppendBody(b []byte) []byte { return b }
func (Pong) AppendBody(b []byte) []byte { return b }

func (m Connect) AppendBody(b []byte) []byte {
	b = append(b, flag(m.Custodial, flagCustodial))
	b = appendID(b, m.Alias)
	b = appendKeys(b, m.Custodial, &m.PublicKey, &m.SecretKey)
	return append(b, m.RemotePublicKey[:]...)
}

func (m Connection) AppendBody(b []byte) []byte {
	b = append(b, flag(m.Custodial, flagCustodial))
	b = appendID(b, m.Alias)
	b = appendID(b, m.ServerAlias)
	b = append(b, m.RemotePublicKey[:]...)
	return appendHandshakeRef(b, m.Custodial, &m.HandshakeHash, m.HandshakeID)
}

func (m Connected) AppendBody(b []byte) []byte {
	return appendID(appendID(b, m.Alias), m.RemoteAlias)
}

func (m Incoming) AppendBody(b []byte) []byte {
	b = appendID(b, m.ID)
	b = appendID(b, m.ServerAlias)
	b = append(b, m.RemotePublicKey[:]...)
	return compact.AppendBuffer(b, m.Payload)
}

func (m Deny) AppendBody(b []byte) []byte   { return appendID(b, m.ID) }
func (m Accept) AppendBody(b []byte) []byte { return appendID(b, m.ID) }

func (m Destroy) AppendBody(b []byte) []byte {
	f := flag(m.Paired, flagPaired) | flag(m.Error != "", flagError)
	b = append(b, f)
	if m.Paired {
		b = appendID(b, m.Alias)
	} else {
		b = appendID(b, m.RemoteAlias)
	}
	if m.Error != "" {
		b = compact.AppendString(b, m.Error)
	}
	return b
}

func (m Listen) AppendBody(b []byte) []byte {
	b = append(b, flag(m.Custodial, flagCustodial))
	b = appendID(b, m.Alias)
	return appendKeys(b, m.Custodial, &m.PublicKey, &m.SecretKey)
}

func (m Listening) AppendBody(b []byte) []byte {
	b = appendID(b, m.Alias)
	b = appendID(b, m.RemoteAlias)
	return compact.AppendIPv4Address(b, m.Address)
}

func (m Close) AppendBody(b []byte) []byte  { return appendID(b, m.Alias) }
func (m Closed) AppendBody(b []byte) []byte { return appendID(b, m.Alias) }

func (m Open) AppendBody(b []byte) []byte {
	b = append(b, flag(m.Custodial, flagCustodial))
	b = appendID(b, m.Alias)
	b = appendID(b, m.RemoteAlias)
	return appendHandshakeRef(b, m.Custodial, &m.HandshakeHash, m.HandshakeID)
}

func (m End) AppendBody(b []byte) []byte { return appendID(b, m.Alias) }

func (m Data) AppendBody(b []byte) []byte {
	b = appendID(b, m.Alias)
	b = compact.AppendUint(b, uint64(len(m.Chunks)))
	for _, c := range m.Chunks {
		b = compact.AppendBuffer(b, c)
	}
	return b
}

func (m Result) AppendBody(b []byte) []byte {
	return compact.AppendBuffer(appendID(b, m.ID), m.Data)
}

func (m Finished) AppendBody(b []byte) []byte { return appendID(b, m.ID) }

func (m Lookup) AppendBody(b []byte) []byte {
	return append(appendID(b, m.ID), m.Topic[:]...)
}

func (m Announce) AppendBody(b []byte) []byte {
	b = append(b, flag(m.Custodial, flagCustodial))
	b = appendID(b, m.ID)
	b = append(b, m.Topic[:]...)
	return appendKeys(b, m.Custodial, &m.PublicKey, &m.SecretKey)
}

func (m Unannounce) AppendBody(b []byte) []byte { return Announce(m).AppendBody(b) }

func (m SignAnnounce) AppendBody(b []byte) []byte {
	b = appendID(b, m.ID)
	b = appendID(b, m.Signee)
	b = append(b, m.Token[:]...)
	b = compact.AppendBuffer(b, m.PeerID)
	return appendIPv4Array(b, m.RelayAddresses)
}

func (m SignUnannounce) AppendBody(b []byte) []byte { return SignAnnounce(m).AppendBody(b) }

func (m Signature) AppendBody(b []byte) []byte {
	return compact.AppendBuffer(appendID(b, m.ID), m.Signature)
}

func (m NoiseSend) AppendBody(b []byte) []byte {
	b = append(b, flag(m.IsInitiator, flagIsInitiator))
	b = appendID(b, m.ID)
	if m.IsInitiator {
		b = appendID(b, m.RemoteStreamAlias)
	}
	return compact.AppendBuffer(b, m.Payload)
}

func (m NoiseReceive) AppendBody(b []byte) []byte {
	b = append(b, flag(m.IsInitiator, flagIsInitiator))
	b = appendID(b, m.ID)
	if !m.IsInitiator {
		b = appendID(b, m.ServerAlias)
	}
	return compact.AppendBuffer(b, m.Payload)
}

func (m NoiseReply) AppendBody(b []byte) []byte {
	b = append(b, flag(m.IsInitiator, flagIsInitiator)|flag(m.Complete, flagComplete))
	b = appendID(b, m.ID)
	b = compact.AppendBuffer(b, m.Payload)
	if !m.IsInitiator && !m.Complete {
		b = append(b, m.RemotePublicKey[:]...)
	}
	if m.Complete {
		b = append(b, m.RemoteID[:]...)
		b = append(b, m.HolepunchSecret[:]...)
	}
	return b
}

func appendIPv4Array(b []byte, addrs []netip.AddrPort) []byte {
	b = compact.AppendUint(b, uint64(len(addrs)))
	for _, a := range addrs {
		b = compact.AppendIPv4Address(b, a)
	}
	return b
}

// Decoding.

// DecodeMessage decodes the body of a message of type t. Bodies that end
// early, or hold a length or count the body cannot, fail with an error
// wrapping ErrMalformed and the compact error; trailing bytes are ignored
// (see Message). Byte slices in the result alias body.
func DecodeMessage(t Type, body []byte) (Message, error) {
	d := compact.NewDecoder(body)
	var m Message
	switch t {
	case TypeHandshake:
		var v Handshake
		v.Custodial = d.Uint8()&flagCustodial != 0
		v.PublicKey = d.Fixed32()
		if v.Custodial {
			v.SecretKey = d.Fixed64()
		}
		m = v
	case TypePing:
		m = Ping{}
	case TypePong:
		m = Pong{}
	case TypeConnect:
		var v Connect
		v.Custodial = d.Uint8()&flagCustodial != 0
		v.Alias = d.Uint32()
		v.PublicKey = d.Fixed32()
		if v.Custodial {
			v.SecretKey = d.Fixed64()
		}
		v.RemotePublicKey = d.Fixed32()
		m = v
	case TypeConnection:
		var v Connection
		v.Custodial = d.Uint8()&flagCustodial != 0
		v.Alias = d.Uint32()
		v.ServerAlias = d.Uint32()
		v.RemotePublicKey = d.Fixed32()
		if v.Custodial {
			v.HandshakeHash = d.Fixed64()
		} else {
			v.HandshakeID = d.Uint32()
		}
		m = v
	case TypeConnected:
		m = Connected{Alias: d.Uint32(), RemoteAlias: d.Uint32()}
	case TypeIncoming:
		m = Incoming{ID: d.Uint32(), ServerAlias: d.Uint32(), RemotePublicKey: d.Fixed32(), Payload: d.Buffer()}
	case TypeDeny:
		m = Deny{ID: d.Uint32()}
	case TypeAccept:
		m = Accept{ID: d.Uint32()}
	case TypeDestroy:
		var v Destroy
		f := d.Uint8()
		v.Paired = f&flagPaired != 0
		if v.Paired {
			v.Alias = d.Uint32()
		} else {
			v.RemoteAlias = d.Uint32()
		}
		if f&flagError != 0 {
			v.Error = d.String()
		}
		m = v
	case TypeListen:
		var v Listen
		v.Custodial = d.Uint8()&flagCustodial != 0
		v.Alias = d.Uint32()
		v.PublicKey = d.Fixed32()
		if v.Custodial {
			v.SecretKey = d.Fixed64()
		}
		m = v
	case TypeListening:
		m = Listening{Alias: d.Uint32(), RemoteAlias: d.Uint32(), Address: d.IPv4Address()}
	case TypeClose:
		m = Close{Alias: d.Uint32()}
	case TypeClosed:
		m = Closed{Alias: d.Uint32()}
	case TypeOpen:
		var v Open
		v.Custodial = d.Uint8()&flagCustodial != 0
		v.Alias = d.Uint32()
		v.RemoteAlias = d.Uint32()
		if v.Custodial {
			v.HandshakeHash = d.Fixed64()
		} else {
			v.HandshakeID = d.Uint32()
		}
		m = v
	case TypeEnd:
		m = End{Alias: d.Uint32()}
	case TypeData:
		var v Data
		v.Alias = d.Uint32()
		n := d.ArrayLen(1, maxArray) // a chunk is at least its length byte
		if n > 0 {
			v.Chunks = make([][]byte, n)
			for i := range v.Chunks {
				v.Chunks[i] = d.Buffer()
			}
		}
		m = v
	case TypeResult:
		m = Result{ID: d.Uint32(), Data: d.Buffer()}
	case TypeFinished:
		m = Finished{ID: d.Uint32()}
	case TypeLookup:
		m = Lookup{ID: d.Uint32(), Topic: d.Fixed32()}
	case TypeAnnounce, TypeUnannounce:
		var v Announce
		v.Custodial = d.Uint8()&flagCustodial != 0
		v.ID = d.Uint32()
		v.Topic = d.Fixed32()
		v.PublicKey = d.Fixed32()
		if v.Custodial {
			v.SecretKey = d.Fixed64()
		}
		if t == TypeUnannounce {
			m = Unannounce(v)
		} else {
			m = v
		}
	case TypeSignAnnounce, TypeSignUnannounce:
		v := SignAnnounce{ID: d.Uint32(), Signee: d.Uint32(), Token: d.Fixed32()}
		v.PeerID = d.OptionalBuffer() // compact-encoding 2.x: 00 is null
		v.RelayAddresses = decodeIPv4Array(d)
		if t == TypeSignUnannounce {
			m = SignUnannounce(v)
		} else {
			m = v
		}
	case TypeSignature:
		m = Signature{ID: d.Uint32(), Signature: d.Buffer()}
	case TypeNoiseSend:
		var v NoiseSend
		v.IsInitiator = d.Uint8()&flagIsInitiator != 0
		v.ID = d.Uint32()
		if v.IsInitiator {
			v.RemoteStreamAlias = d.Uint32()
		}
		v.Payload = d.Buffer()
		m = v
	case TypeNoiseReceive:
		var v NoiseReceive
		v.IsInitiator = d.Uint8()&flagIsInitiator != 0
		v.ID = d.Uint32()
		if !v.IsInitiator {
			v.ServerAlias = d.Uint32()
		}
		v.Payload = d.Buffer()
		m = v
	case TypeNoiseReply:
		var v NoiseReply
		f := d.Uint8()
		v.IsInitiator = f&flagIsInitiator != 0
		v.Complete = f&flagComplete != 0
		v.ID = d.Uint32()
		v.Payload = d.Buffer()
		if !v.IsInitiator && !v.Complete {
			v.RemotePublicKey = d.Fixed32()
		}
		if v.Complete {
			v.RemoteID = d.Fixed32()
			v.HolepunchSecret = d.Fixed32()
		}
		m = v
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, t)
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, t, err)
	}
	return m, nil
}

func decodeIPv4Array(d *compact.Decoder) []netip.AddrPort {
	n := d.ArrayLen(6, maxArray) // an ipv4Address is 6 bytes
	if n == 0 {
		return nil
	}
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = d.IPv4Address()
	}
	return out
}
