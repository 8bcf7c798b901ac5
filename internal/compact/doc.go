// Package compact implements compact-encoding, the binary encoding of every
// message in the HyperDHT stack (dht-rpc, hyperdht, protomux, blind-relay,
// dht-relay), as the npm packages compact-encoding and compact-encoding-net
// define it.
//
// Encoders are append-style: AppendX(b, v) returns b with v appended.
// Decoding goes through a Decoder, which never panics and never allocates
// more than its input: a read past the end, or a length that exceeds what is
// left, sets a sticky error and returns zero values, so a message decoder
// reads every field and checks Err once at the end.
//
// Layouts (all little-endian):
//
//	uint     n <= 0xfc: one byte n
//	         n <= 0xffff: 0xfd, uint16
//	         n <= 0xffffffff: 0xfe, uint32
//	         else: 0xff, uint64
//	int      zig-zag ((n << 1) ^ (n >> 63)) as uint
//	buffer   uint length, then the bytes
//	string   uint byte length, then UTF-8 bytes
//	bool     one byte, 0 or 1
//	fixedN   N raw bytes
//	array    uint count, then the elements
//	ipv4Address  4 address bytes (network order), uint16 port
//	ipv6Address  16 address bytes (network order), uint16 port
//	ipAddress    uint8 family (4 or 6), then the address bytes, uint16 port
package compact
