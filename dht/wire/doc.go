// Package wire holds hyperdht 6.34.0's protocol layer above dht-rpc, as
// pure data: command ids and namespaces, the compact-encoding messages
// carried in dht-rpc request and reply values, announce and mutable
// signatures, the secure payload that encrypts holepunch messages, and the
// record store a persistent node keeps (lib/persistent.js).
//
// Nothing here does I/O or reads the clock: the store takes the current
// time as an argument, so the DHT node decides when "now" is and tests can
// move it freely.
//
// Wire compatibility is the point of the package, so encoders follow the
// reference's choices exactly, including its quirks (which optional field
// sets its flag when empty, which counts are unbounded), and decoders
// accept what the reference accepts: trailing bytes after a message are
// ignored, as compact-encoding's decode ignores them. Decoders never panic
// and allocate at most in proportion to their input.
package wire
