package compact

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// encodeCase encodes the value a vector line names with the Go encoder and
// checks the decoder reads it back.
func encodeCase(t *testing.T, name string) []byte {
	t.Helper()
	typ, val, _ := strings.Cut(name, ":")
	roundTrip := func(b []byte, read func(d *Decoder) any, want any) []byte {
		d := NewDecoder(b)
		got := read(d)
		if err := d.Finish(); err != nil {
			t.Errorf("%s: decode: %v", name, err)
		}
		if !equalAny(got, want) {
			t.Errorf("%s: decoded %v, want %v", name, got, want)
		}
		return b
	}
	switch typ {
	case "uint", "uint8", "uint16", "uint24", "uint32", "uint64":
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		switch typ {
		case "uint":
			return roundTrip(AppendUint(nil, n), func(d *Decoder) any { return d.Uint() }, n)
		case "uint8":
			return roundTrip(AppendUint8(nil, uint8(n)), func(d *Decoder) any { return uint64(d.Uint8()) }, n)
		case "uint16":
			return roundTrip(AppendUint16(nil, uint16(n)), func(d *Decoder) any { return uint64(d.Uint16()) }, n)
		case "uint24":
			return roundTrip(AppendUint24(nil, uint32(n)), func(d *Decoder) any { return uint64(d.Uint24()) }, n)
		case "uint32":
			return roundTrip(AppendUint32(nil, uint32(n)), func(d *Decoder) any { return uint64(d.Uint32()) }, n)
		default:
			return roundTrip(AppendUint64(nil, n), func(d *Decoder) any { return d.Uint64() }, n)
		}
	case "int":
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return roundTrip(AppendInt(nil, n), func(d *Decoder) any { return d.Int() }, n)
	case "float64":
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return roundTrip(AppendFloat64(nil, f), func(d *Decoder) any { return d.Float64() }, f)
	case "bool":
		v := val == "true"
		return roundTrip(AppendBool(nil, v), func(d *Decoder) any { return d.Bool() }, v)
	case "string":
		return roundTrip(AppendString(nil, val), func(d *Decoder) any { return d.String() }, val)
	case "buffer":
		v, _ := hex.DecodeString(val)
		return roundTrip(AppendBuffer(nil, v), func(d *Decoder) any { return d.Buffer() }, v)
	case "fixed32":
		v := bytes.Repeat([]byte{7}, 32)
		return roundTrip(AppendFixed(nil, v), func(d *Decoder) any { x := d.Fixed32(); return x[:] }, v)
	case "fixed64":
		v := bytes.Repeat([]byte{9}, 64)
		return roundTrip(AppendFixed(nil, v), func(d *Decoder) any { x := d.Fixed64(); return x[:] }, v)
	case "array-uint":
		vals := []uint64{1, 300, 70000}
		b := AppendUint(nil, uint64(len(vals)))
		for _, v := range vals {
			b = AppendUint(b, v)
		}
		return roundTrip(b, func(d *Decoder) any {
			n := d.ArrayLen(1, 16)
			var out []uint64
			for range n {
				out = append(out, d.Uint())
			}
			return out
		}, vals)
	case "ipv4Address", "ipv6Address", "ipAddress":
		ap := netip.MustParseAddrPort(val)
		switch typ {
		case "ipv4Address":
			return roundTrip(AppendIPv4Address(nil, ap), func(d *Decoder) any { return d.IPv4Address() }, ap)
		case "ipv6Address":
			return roundTrip(AppendIPv6Address(nil, ap), func(d *Decoder) any { return d.IPv6Address() }, ap)
		default:
			return roundTrip(AppendIPAddress(nil, ap), func(d *Decoder) any { return d.IPAddress() }, ap)
		}
	}
	t.Fatalf("unknown vector %q", name)
	return nil
}

func equalAny(a, b any) bool {
	switch x := a.(type) {
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y)
	case []uint64:
		y, ok := b.([]uint64)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return a == b
}

// TestNodeVectors encodes every value the Node reference encodes in
// interop/compact-vectors.js and compares bytes.
func TestNodeVectors(t *testing.T) {
	p := nodetest.Start(t, "compact-vectors.js")
	n := 0
	for {
		line := p.Expect("", 30*time.Second)
		if line == "done" {
			break
		}
		i := strings.LastIndexByte(line, ' ')
		name, wantHex := line[:i], line[i+1:]
		want, err := hex.DecodeString(wantHex)
		if err != nil {
			t.Fatalf("%s: bad hex from node", name)
		}
		if got := encodeCase(t, name); !bytes.Equal(got, want) {
			t.Errorf("%s: Go %x, Node %x", name, got, want)
		}
		n++
	}
	if n < 50 {
		t.Fatalf("only %d vectors read", n)
	}
}

func TestUintBoundaries(t *testing.T) {
	for _, n := range []uint64{0, 0xfc, 0xfd, 0xffff, 0x10000, 0xffffffff, 0x100000000, math.MaxUint64} {
		b := AppendUint(nil, n)
		if len(b) != UintSize(n) {
			t.Errorf("UintSize(%d) = %d, encoded %d", n, UintSize(n), len(b))
		}
		d := NewDecoder(b)
		if got := d.Uint(); got != n || d.Finish() != nil {
			t.Errorf("uint %d: got %d, err %v", n, got, d.Finish())
		}
	}
	for _, n := range []int64{math.MinInt64, math.MaxInt64, 0, -1} {
		d := NewDecoder(AppendInt(nil, n))
		if got := d.Int(); got != n {
			t.Errorf("int %d: got %d", n, got)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		read func(d *Decoder)
		want error
	}{
		{"empty uint", nil, func(d *Decoder) { d.Uint() }, ErrShort},
		{"truncated uint16 form", []byte{0xfd, 1}, func(d *Decoder) { d.Uint() }, ErrShort},
		{"truncated uint64 form", []byte{0xff, 1, 2, 3}, func(d *Decoder) { d.Uint() }, ErrShort},
		{"buffer longer than input", []byte{5, 1, 2}, func(d *Decoder) { d.Buffer() }, ErrTooLong},
		{"huge buffer length", []byte{0xff, 0, 0, 0, 0, 0, 0, 0, 0x80}, func(d *Decoder) { d.Buffer() }, ErrTooLong},
		{"huge array", []byte{0xfe, 0xff, 0xff, 0xff, 0xff}, func(d *Decoder) { d.ArrayLen(1, 1<<20) }, ErrTooLong},
		{"array over bound", []byte{3, 1, 1, 1}, func(d *Decoder) { d.ArrayLen(1, 2) }, ErrTooLong},
		{"array elements cannot fit", []byte{3, 1, 1, 1}, func(d *Decoder) { d.ArrayLen(2, 10) }, ErrTooLong},
		{"bool 2", []byte{2}, func(d *Decoder) { d.Bool() }, ErrInvalid},
		{"family 5", []byte{5, 1, 2, 3, 4, 0, 0}, func(d *Decoder) { d.IPAddress() }, ErrInvalid},
		{"short ipv4", []byte{127, 0, 0, 1, 0}, func(d *Decoder) { d.IPv4Address() }, ErrShort},
		{"fixed32 short", make([]byte, 31), func(d *Decoder) { d.Fixed32() }, ErrShort},
		{"trailing", []byte{1, 2}, func(d *Decoder) { d.Uint() }, ErrTrailing},
	}
	for _, c := range cases {
		d := NewDecoder(c.in)
		c.read(d)
		if err := d.Finish(); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
}

func TestStickyError(t *testing.T) {
	d := NewDecoder([]byte{0xfd})
	d.Uint()
	first := d.Err()
	if first == nil {
		t.Fatal("no error on truncated input")
	}
	if d.Uint() != 0 || d.Buffer() != nil || d.Err() != first {
		t.Fatal("reads after an error must return zero values and keep the first error")
	}
}

func TestOptionalBuffer(t *testing.T) {
	d := NewDecoder([]byte{0, 1, 9})
	if b := d.OptionalBuffer(); b != nil {
		t.Fatalf("empty optional buffer = %v, want nil", b)
	}
	if b := d.OptionalBuffer(); !bytes.Equal(b, []byte{9}) {
		t.Fatalf("got %v", b)
	}
	if b := NewDecoder([]byte{0}).Buffer(); b == nil {
		t.Fatal("empty Buffer must be non-nil")
	}
}

// FuzzDecoder reads a fixed sequence of every type from arbitrary input. It
// must never panic, and whatever decodes without error must re-encode to
// the bytes it came from (modulo non-minimal uints, which are re-read).
func FuzzDecoder(f *testing.F) {
	var seed []byte
	seed = AppendUint(seed, 70000)
	seed = AppendInt(seed, -5)
	seed = AppendBuffer(seed, []byte("abc"))
	seed = AppendString(seed, "hello")
	seed = AppendBool(seed, true)
	seed = AppendIPAddress(seed, netip.MustParseAddrPort("127.0.0.1:80"))
	seed = AppendIPAddress(seed, netip.MustParseAddrPort("[::1]:80"))
	seed = AppendUint(seed, 2)
	seed = AppendUint(seed, 1)
	seed = AppendUint(seed, 1<<40)
	seed = AppendFixed(seed, make([]byte, 32))
	f.Add(seed)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := NewDecoder(in)
		u := d.Uint()
		i := d.Int()
		buf := d.Buffer()
		s := d.String()
		bl := d.Bool()
		a1 := d.IPAddress()
		a2 := d.IPAddress()
		n := d.ArrayLen(1, 1000)
		arr := make([]uint64, 0, n)
		for range n {
			arr = append(arr, d.Uint())
		}
		fx := d.Fixed32()
		if d.Err() != nil {
			return
		}
		var out []byte
		out = AppendUint(out, u)
		out = AppendInt(out, i)
		out = AppendBuffer(out, buf)
		out = AppendString(out, s)
		out = AppendBool(out, bl)
		out = AppendIPAddress(out, a1)
		out = AppendIPAddress(out, a2)
		out = AppendUint(out, uint64(len(arr)))
		for _, v := range arr {
			out = AppendUint(out, v)
		}
		out = AppendFixed(out, fx[:])
		d2 := NewDecoder(out)
		if d2.Uint() != u || d2.Int() != i || !bytes.Equal(d2.Buffer(), buf) || d2.String() != s ||
			d2.Bool() != bl || d2.IPAddress() != a1 || d2.IPAddress() != a2 {
			t.Fatalf("re-encoded value differs")
		}
	})
}

func BenchmarkUint(b *testing.B) {
	buf := make([]byte, 0, 16)
	for i := range b.N {
		buf = AppendUint(buf[:0], uint64(i))
		d := Decoder{buf: buf}
		_ = d.Uint()
	}
}
