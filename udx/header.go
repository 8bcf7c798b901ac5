package udx

import (
	"encoding/binary"
)

// Wire constants of libudx's stream packets.
const (
	HeaderSize = 20

	magicByte   = 0xFF
	wireVersion = 0x01

	// MaxSACKBlocks is how many SACK blocks libudx puts in one ACK
	// (UDX_MAX_SACKS); we emit no more either.
	MaxSACKBlocks = 50

	// recvBufferSize mirrors UDX_SOCKET_PACKET_BUFFER_SIZE: libudx reads
	// each datagram into 2048 bytes, so larger ones are truncated there.
	recvBufferSize = 2048
)

// Type flags (byte 2 of the header). Receivers test the bits independently.
const (
	FlagData      = 0x01
	FlagEnd       = 0x02
	FlagSACK      = 0x04
	FlagMessage   = 0x08
	FlagDestroy   = 0x10
	FlagHeartbeat = 0x20

	flagDataOrEnd = FlagData | FlagEnd
)

// Header is the fixed 20-byte prefix of every UDX stream packet.
type Header struct {
	Type       uint8  // bit flags; 0 is a pure ACK
	DataOffset uint8  // bytes between the header and the payload (probe padding)
	ID         uint32 // the receiver's stream id
	RWnd       uint32 // sender's receive window in bytes
	Seq        uint32 // sender's seq (in packets)
	Ack        uint32 // next in-order seq the sender expects
}

// Put writes h into b[:20]:
//
//	0     magic 0xFF
//	1     version 0x01
//	2     type flags
//	3     data_offset
//	4..7  id    (u32 little-endian)
//	8..11 rwnd  (u32 little-endian)
//	12..15 seq  (u32 little-endian)
//	16..19 ack  (u32 little-endian)
func (h *Header) Put(b []byte) {
	_ = b[19]
	b[0] = magicByte
	b[1] = wireVersion
	b[2] = h.Type
	b[3] = h.DataOffset
	binary.LittleEndian.PutUint32(b[4:], h.ID)
	binary.LittleEndian.PutUint32(b[8:], h.RWnd)
	binary.LittleEndian.PutUint32(b[12:], h.Seq)
	binary.LittleEndian.PutUint32(b[16:], h.Ack)
}

// isStreamPacket reports whether b looks like a UDX stream packet by the
// same test libudx applies before its id lookup.
func isStreamPacket(b []byte) bool {
	return len(b) >= HeaderSize && b[0] == magicByte && b[1] == wireVersion
}

// packetID returns the receiver id of a packet that passed isStreamPacket.
func packetID(b []byte) uint32 { return binary.LittleEndian.Uint32(b[4:]) }

// SACKBlock is a half-open range [Start, End) of sequence numbers that the
// receiver holds above its cumulative ack.
type SACKBlock struct {
	Start, End uint32
}

// Packet is a decoded stream packet. Payload and the SACK blocks alias or
// are appended to caller-provided storage; nothing is retained.
type Packet struct {
	Header
	SACKs   []SACKBlock
	Payload []byte
	// BadOffset is set when data_offset points past the end of the
	// datagram. libudx still answers a HEARTBEAT carrying such an offset but
	// drops everything else, so the header is returned rather than an error.
	BadOffset bool
}

// DecodePacket parses a stream packet the way libudx's process_packet does.
// sacks is reused for the SACK blocks. It returns ErrNotUDX when b is not a
// stream packet at all.
func DecodePacket(b []byte, sacks []SACKBlock) (Packet, error) {
	var p Packet
	if !isStreamPacket(b) {
		return p, ErrNotUDX
	}
	p.Type = b[2]
	p.DataOffset = b[3]
	p.ID = binary.LittleEndian.Uint32(b[4:])
	p.RWnd = binary.LittleEndian.Uint32(b[8:])
	p.Seq = binary.LittleEndian.Uint32(b[12:])
	p.Ack = binary.LittleEndian.Uint32(b[16:])
	body := b[HeaderSize:]
	p.SACKs = sacks[:0]
	if p.Type&FlagSACK != 0 {
		// The SACK area is data_offset long when that fits strictly inside
		// the body, else the whole body; a trailing partial block is ignored.
		n := len(body)
		if off := int(p.DataOffset); off > 0 && off < n {
			n = off
		}
		for i := 0; i+8 <= n; i += 8 {
			p.SACKs = append(p.SACKs, SACKBlock{
				Start: binary.LittleEndian.Uint32(body[i:]),
				End:   binary.LittleEndian.Uint32(body[i+4:]),
			})
		}
	}
	if off := int(p.DataOffset); off > len(body) {
		p.BadOffset = true
		return p, nil
	} else {
		p.Payload = body[off:]
	}
	return p, nil
}

// AppendPacket appends the encoding of h, then the SACK blocks (each
// start u32 LE, end u32 LE), then h.DataOffset zero bytes of padding, then
// payload. It is the inverse of DecodePacket for packets libudx emits.
func AppendPacket(dst []byte, h *Header, sacks []SACKBlock, payload []byte) []byte {
	var hdr [HeaderSize]byte
	h.Put(hdr[:])
	dst = append(dst, hdr[:]...)
	for _, s := range sacks {
		dst = binary.LittleEndian.AppendUint32(dst, s.Start)
		dst = binary.LittleEndian.AppendUint32(dst, s.End)
	}
	for i := 0; i < int(h.DataOffset); i++ {
		dst = append(dst, 0)
	}
	return append(dst, payload...)
}

// seqDiff is the signed distance a-b in 32-bit sequence space.
func seqDiff(a, b uint32) int32 { return int32(a - b) }

// seqLess reports a < b in sequence space.
func seqLess(a, b uint32) bool { return int32(a-b) < 0 }
