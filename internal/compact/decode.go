package compact

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
)

// Decoder reads compact-encoded values from a byte slice. The zero value
// decodes nothing; use NewDecoder. Errors are sticky: after the first, every
// read returns a zero value and Err reports the first error.
//
// Slices returned by Buffer and Fixed alias the input.
type Decoder struct {
	buf []byte
	off int
	err error
}

// NewDecoder returns a Decoder reading b.
func NewDecoder(b []byte) *Decoder { return &Decoder{buf: b} }

// Reset makes d read b from the start, clearing any error.
func (d *Decoder) Reset(b []byte) { *d = Decoder{buf: b} }

// Err returns the first error met, or nil.
func (d *Decoder) Err() error { return d.err }

// Len returns how many bytes are left.
func (d *Decoder) Len() int { return len(d.buf) - d.off }

// Offset returns how many bytes have been consumed.
func (d *Decoder) Offset() int { return d.off }

// Finish returns the first error, or ErrTrailing if input is left over.
func (d *Decoder) Finish() error {
	if d.err != nil {
		return d.err
	}
	if d.off != len(d.buf) {
		return fmt.Errorf("%w: %d left", ErrTrailing, len(d.buf)-d.off)
	}
	return nil
}

// Fail records err (if none is recorded yet), so that message decoders can
// report field-level problems through the same sticky error.
func (d *Decoder) Fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *Decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.buf)-d.off {
		d.err = fmt.Errorf("%w: need %d bytes at offset %d, have %d", ErrShort, n, d.off, len(d.buf)-d.off)
		return nil
	}
	b := d.buf[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

// Uint reads a variable-length uint. Non-minimal forms are accepted, as the
// reference accepts them.
func (d *Decoder) Uint() uint64 {
	p := d.take(1)
	if p == nil {
		return 0
	}
	switch p[0] {
	case 0xfd:
		return uint64(d.Uint16())
	case 0xfe:
		return uint64(d.Uint32())
	case 0xff:
		return d.Uint64()
	}
	return uint64(p[0])
}

// Int reads a zig-zag encoded int.
func (d *Decoder) Int() int64 {
	u := d.Uint()
	return int64(u>>1) ^ -int64(u&1)
}

// Uint8 reads one byte.
func (d *Decoder) Uint8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

// Uint16 reads a fixed 2-byte little-endian integer.
func (d *Decoder) Uint16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

// Uint24 reads a fixed 3-byte little-endian integer.
func (d *Decoder) Uint24() uint32 {
	if p := d.take(3); p != nil {
		return uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16
	}
	return 0
}

// Uint32 reads a fixed 4-byte little-endian integer.
func (d *Decoder) Uint32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

// Uint64 reads a fixed 8-byte little-endian integer.
func (d *Decoder) Uint64() uint64 {
	if p := d.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// Float64 reads an IEEE 754 double.
func (d *Decoder) Float64() float64 { return math.Float64frombits(d.Uint64()) }

// Bool reads one byte that must be 0 or 1.
func (d *Decoder) Bool() bool {
	switch d.Uint8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.Fail(fmt.Errorf("%w: bool byte not 0 or 1", ErrInvalid))
	return false
}

// Buffer reads a length-prefixed buffer. The result aliases the input; an
// empty buffer is returned as a non-nil empty slice (use OptionalBuffer for
// the reference's null-on-empty form).
func (d *Decoder) Buffer() []byte {
	n := d.length()
	return d.take(n)
}

// OptionalBuffer reads a buffer, returning nil for length 0, as
// compact-encoding's optionalBuffer (and older versions' buffer) decode it.
func (d *Decoder) OptionalBuffer() []byte {
	b := d.Buffer()
	if len(b) == 0 {
		return nil
	}
	return b
}

// String reads a length-prefixed UTF-8 string. Invalid UTF-8 is kept as
// is; callers that display it should sanitise.
func (d *Decoder) String() string { return string(d.Buffer()) }

// Fixed reads n raw bytes, aliasing the input.
func (d *Decoder) Fixed(n int) []byte { return d.take(n) }

// Fixed32 reads 32 raw bytes.
func (d *Decoder) Fixed32() (v [32]byte) {
	copy(v[:], d.take(32))
	return v
}

// Fixed64 reads 64 raw bytes.
func (d *Decoder) Fixed64() (v [64]byte) {
	copy(v[:], d.take(64))
	return v
}

// Rest returns every byte left, aliasing the input.
func (d *Decoder) Rest() []byte { return d.take(d.Len()) }

// length reads a uint used as a byte length, checking it against the input
// left so no caller allocates for a length the input cannot hold.
func (d *Decoder) length() int {
	n := d.Uint()
	if d.err != nil {
		return 0
	}
	if n > uint64(d.Len()) {
		d.Fail(fmt.Errorf("%w: length %d at offset %d, %d bytes left", ErrTooLong, n, d.off, d.Len()))
		return 0
	}
	return int(n)
}

// ArrayLen reads an array's element count. Every element takes at least
// minElem bytes (at least 1 is assumed), so a count that the rest of the
// input cannot hold, or that is above max, is an error; callers may then
// allocate count elements safely.
func (d *Decoder) ArrayLen(minElem, max int) int {
	n := d.Uint()
	if d.err != nil {
		return 0
	}
	if minElem < 1 {
		minElem = 1
	}
	if n > uint64(max) || n > uint64(d.Len()/minElem) {
		d.Fail(fmt.Errorf("%w: array of %d at offset %d (bound %d, %d bytes left)", ErrTooLong, n, d.off, max, d.Len()))
		return 0
	}
	return int(n)
}

// IPv4Address reads an ipv4Address.
func (d *Decoder) IPv4Address() netip.AddrPort {
	p := d.take(4)
	port := d.Uint16()
	if d.err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(p)), port)
}

// IPv6Address reads an ipv6Address.
func (d *Decoder) IPv6Address() netip.AddrPort {
	p := d.take(16)
	port := d.Uint16()
	if d.err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(p)), port)
}

// IPAddress reads an ipAddress: family 4 or 6, then the address. The
// reference reads any family other than 4 as IPv6; a Go peer rejects it
// instead, since no encoder writes another value.
func (d *Decoder) IPAddress() netip.AddrPort {
	switch f := d.Uint8(); f {
	case 4:
		return d.IPv4Address()
	case 6:
		return d.IPv6Address()
	default:
		d.Fail(fmt.Errorf("%w: address family %d", ErrInvalid, f))
	}
	return netip.AddrPort{}
}
