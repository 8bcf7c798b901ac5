package compact

import (
	"encoding/binary"
	"math"
	"net/netip"
)

// UintSize returns the encoded size of n as a uint.
func UintSize(n uint64) int {
	switch {
	case n <= 0xfc:
		return 1
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

// AppendUint appends n in the variable-length uint layout.
func AppendUint(b []byte, n uint64) []byte {
	switch {
	case n <= 0xfc:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.LittleEndian.AppendUint16(append(b, 0xfd), uint16(n))
	case n <= 0xffffffff:
		return binary.LittleEndian.AppendUint32(append(b, 0xfe), uint32(n))
	}
	return binary.LittleEndian.AppendUint64(append(b, 0xff), n)
}

// AppendInt appends n zig-zag encoded as a uint.
func AppendInt(b []byte, n int64) []byte {
	return AppendUint(b, uint64(n<<1)^uint64(n>>63))
}

// AppendUint8 appends one byte.
func AppendUint8(b []byte, n uint8) []byte { return append(b, n) }

// AppendUint16 appends a fixed 2-byte little-endian integer.
func AppendUint16(b []byte, n uint16) []byte { return binary.LittleEndian.AppendUint16(b, n) }

// AppendUint24 appends a fixed 3-byte little-endian integer (n's top byte is dropped).
func AppendUint24(b []byte, n uint32) []byte { return append(b, byte(n), byte(n>>8), byte(n>>16)) }

// AppendUint32 appends a fixed 4-byte little-endian integer.
func AppendUint32(b []byte, n uint32) []byte { return binary.LittleEndian.AppendUint32(b, n) }

// AppendUint64 appends a fixed 8-byte little-endian integer.
func AppendUint64(b []byte, n uint64) []byte { return binary.LittleEndian.AppendUint64(b, n) }

// AppendFloat64 appends an IEEE 754 double, little-endian.
func AppendFloat64(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

// AppendBool appends 1 or 0.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// AppendBuffer appends len(v) as a uint and then v. A nil buffer encodes
// like an empty one, as compact-encoding encodes null.
func AppendBuffer(b []byte, v []byte) []byte {
	return append(AppendUint(b, uint64(len(v))), v...)
}

// AppendString appends s as a buffer of its UTF-8 bytes.
func AppendString(b []byte, s string) []byte {
	return append(AppendUint(b, uint64(len(s))), s...)
}

// AppendFixed appends v as is (fixed32, fixed64 and the like).
func AppendFixed(b []byte, v []byte) []byte { return append(b, v...) }

// AppendIPv4Address appends an ipv4Address: 4 address bytes and a uint16
// port. An address that is not IPv4 (or IPv4-mapped IPv6) is written as
// 0.0.0.0, which the reference would also never produce for a valid peer.
func AppendIPv4Address(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	var ip4 [4]byte
	if a.Is4() {
		ip4 = a.As4()
	}
	return AppendUint16(append(b, ip4[:]...), ap.Port())
}

// AppendIPv6Address appends an ipv6Address: 16 address bytes and a uint16 port.
func AppendIPv6Address(b []byte, ap netip.AddrPort) []byte {
	ip16 := ap.Addr().As16()
	return AppendUint16(append(b, ip16[:]...), ap.Port())
}

// AppendIPAddress appends an ipAddress: family byte 4 or 6, then the
// address and port. The family follows the Go address as is (an
// IPv4-mapped IPv6 address is family 6, as the reference treats any host
// string with a colon); callers holding addresses from a dual-stack socket
// unmap them first.
func AppendIPAddress(b []byte, ap netip.AddrPort) []byte {
	if ap.Addr().Is4() {
		return AppendIPv4Address(append(b, 4), ap)
	}
	return AppendIPv6Address(append(b, 6), ap)
}
