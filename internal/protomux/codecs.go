package protomux

import "github.com/keytunnel/keytunnel/internal/compact"

// Uint is compact-encoding's uint as a Codec.
type Uint struct{}

// Append appends v as a compact uint.
func (Uint) Append(b []byte, v uint64) []byte { return compact.AppendUint(b, v) }

// Decode reads a compact uint; trailing bytes are ignored.
func (Uint) Decode(b []byte) (uint64, error) {
	d := compact.NewDecoder(b)
	v := d.Uint()
	return v, d.Err()
}

// String is compact-encoding's string (uint length ‖ UTF-8) as a Codec.
type String struct{}

// Append appends v length-prefixed.
func (String) Append(b []byte, v string) []byte { return compact.AppendString(b, v) }

// Decode reads a length-prefixed string; trailing bytes are ignored.
func (String) Decode(b []byte) (string, error) {
	d := compact.NewDecoder(b)
	v := d.String()
	return v, d.Err()
}
