package rpc

import (
	"net/netip"

	"github.com/keytunnel/keytunnel/internal/compact"
)

// Wire constants. Byte 0 of every datagram is (type << 4) | version.
const (
	version     = 0b11
	typeRequest = 0x00<<4 | version // 0x03
	typeReply   = 0x01<<4 | version // 0x13
)

// Request flag bits (byte 1 of a REQUEST).
const (
	reqFlagID       = 0x01
	reqFlagToken    = 0x02
	reqFlagInternal = 0x04
	reqFlagTarget   = 0x08
	reqFlagValue    = 0x10
)

// Response flag bits (byte 1 of a RESPONSE).
const (
	resFlagID     = 0x01
	resFlagToken  = 0x02
	resFlagCloser = 0x04
	resFlagError  = 0x08
	resFlagValue  = 0x10
)

// maxCloserNodes is compact-encoding's array bound; a reply can only hold
// about 10k of them in one datagram anyway.
const maxCloserNodes = 0x100000

// RequestMessage is the decoded form of a REQUEST datagram.
//
// Layout (all multi-byte integers little-endian):
//
//	byte 0      0x03 (type 0, version 3)
//	byte 1      flags (uint; the reference writes one raw byte): 0x01 id,
//	            0x02 token, 0x04 internal, 0x08 target, 0x10 value
//	bytes 2-3   tid (u16)
//	6 bytes     to: ipv4Address (4 address bytes, u16 port) the sender
//	            addressed the datagram to
//	32 bytes    id, if flags&0x01: BLAKE2b-256 of the sender's ipv4Address
//	32 bytes    token, if flags&0x02
//	uint        command
//	32 bytes    target, if flags&0x08
//	uint+bytes  value, if flags&0x10 (buffer: uint length, then bytes)
//
// Trailing bytes after the last field are ignored, as the reference does.
type RequestMessage struct {
	TID      uint16
	To       netip.AddrPort
	ID       *ID       // nil when absent
	Token    *[32]byte // nil when absent
	Internal bool
	Command  uint64
	Target   *ID    // nil when absent
	Value    []byte // nil when absent; non-nil empty is sent as present, length 0
}

// ResponseMessage is the decoded form of a RESPONSE datagram.
//
// Layout:
//
//	byte 0      0x13 (type 1, version 3)
//	byte 1      flags (uint): 0x01 id, 0x02 token, 0x04 closerNodes,
//	            0x08 error, 0x10 value
//	bytes 2-3   tid (u16), copied from the request
//	6 bytes     to: the requester's address as the responder saw it
//	32 bytes    id, if flags&0x01
//	32 bytes    token, if flags&0x02
//	array       closerNodes, if flags&0x04: uint count, then count
//	            ipv4Address entries of 6 bytes
//	uint        error code, if flags&0x08 (absent means 0)
//	uint+bytes  value, if flags&0x10
type ResponseMessage struct {
	TID         uint16
	To          netip.AddrPort
	ID          *ID
	Token       *[32]byte
	CloserNodes []netip.AddrPort // flag set only when non-empty
	Error       uint64           // flag set only when non-zero
	Value       []byte           // nil when absent
}

// AppendRequest appends m's encoding to b.
func AppendRequest(b []byte, m *RequestMessage) []byte {
	var flags byte
	if m.ID != nil {
		flags |= reqFlagID
	}
	if m.Token != nil {
		flags |= reqFlagToken
	}
	if m.Internal {
		flags |= reqFlagInternal
	}
	if m.Target != nil {
		flags |= reqFlagTarget
	}
	if m.Value != nil {
		flags |= reqFlagValue
	}
	b = append(b, typeRequest, flags)
	b = compact.AppendUint16(b, m.TID)
	b = compact.AppendIPv4Address(b, m.To)
	if m.ID != nil {
		b = append(b, m.ID[:]...)
	}
	if m.Token != nil {
		b = append(b, m.Token[:]...)
	}
	b = compact.AppendUint(b, m.Command)
	if m.Target != nil {
		b = append(b, m.Target[:]...)
	}
	if m.Value != nil {
		b = compact.AppendBuffer(b, m.Value)
	}
	return b
}

// AppendResponse appends m's encoding to b.
func AppendResponse(b []byte, m *ResponseMessage) []byte {
	var flags byte
	if m.ID != nil {
		flags |= resFlagID
	}
	if m.Token != nil {
		flags |= resFlagToken
	}
	if len(m.CloserNodes) > 0 {
		flags |= resFlagCloser
	}
	if m.Error > 0 {
		flags |= resFlagError
	}
	if m.Value != nil {
		flags |= resFlagValue
	}
	b = append(b, typeReply, flags)
	b = compact.AppendUint16(b, m.TID)
	b = compact.AppendIPv4Address(b, m.To)
	if m.ID != nil {
		b = append(b, m.ID[:]...)
	}
	if m.Token != nil {
		b = append(b, m.Token[:]...)
	}
	if len(m.CloserNodes) > 0 {
		b = compact.AppendUint(b, uint64(len(m.CloserNodes)))
		for _, n := range m.CloserNodes {
			b = compact.AppendIPv4Address(b, n)
		}
	}
	if m.Error > 0 {
		b = compact.AppendUint(b, m.Error)
	}
	if m.Value != nil {
		b = compact.AppendBuffer(b, m.Value)
	}
	return b
}

// DecodeRequest decodes a REQUEST datagram (including byte 0). Slices in
// the result alias b. Bytes after the last field are ignored.
func DecodeRequest(b []byte) (*RequestMessage, error) {
	if len(b) < 1 || b[0] != typeRequest {
		return nil, ErrMalformed
	}
	d := compact.NewDecoder(b[1:])
	flags := d.Uint()
	m := &RequestMessage{TID: d.Uint16(), To: d.IPv4Address()}
	if flags&reqFlagID != 0 {
		m.ID = fixedID(d)
	}
	if flags&reqFlagToken != 0 {
		t := d.Fixed32()
		m.Token = &t
	}
	m.Internal = flags&reqFlagInternal != 0
	m.Command = d.Uint()
	if flags&reqFlagTarget != 0 {
		m.Target = fixedID(d)
	}
	if flags&reqFlagValue != 0 {
		m.Value = d.Buffer()
	}
	if err := d.Err(); err != nil {
		return nil, malformed(err)
	}
	return m, nil
}

// DecodeResponse decodes a RESPONSE datagram (including byte 0).
func DecodeResponse(b []byte) (*ResponseMessage, error) {
	if len(b) < 1 || b[0] != typeReply {
		return nil, ErrMalformed
	}
	d := compact.NewDecoder(b[1:])
	flags := d.Uint()
	m := &ResponseMessage{TID: d.Uint16(), To: d.IPv4Address()}
	if flags&resFlagID != 0 {
		m.ID = fixedID(d)
	}
	if flags&resFlagToken != 0 {
		t := d.Fixed32()
		m.Token = &t
	}
	if flags&resFlagCloser != 0 {
		n := d.ArrayLen(6, maxCloserNodes)
		if n > 0 {
			m.CloserNodes = make([]netip.AddrPort, 0, n)
		}
		for range n {
			m.CloserNodes = append(m.CloserNodes, d.IPv4Address())
		}
	}
	if flags&resFlagError != 0 {
		m.Error = d.Uint()
	}
	if flags&resFlagValue != 0 {
		m.Value = d.Buffer()
	}
	if err := d.Err(); err != nil {
		return nil, malformed(err)
	}
	return m, nil
}

func fixedID(d *compact.Decoder) *ID {
	v := ID(d.Fixed32())
	return &v
}
