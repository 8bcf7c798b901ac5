// Package admit holds what the relays share to admit connections from the
// internet: the source a remote address counts under (an IPv4 address or
// an IPv6 /64) and a counter of connections in total and per source.
//
// It is stdlib only, below relay/, so that relay/dhtrelay and
// relay/blindrelay group sources the same way without importing each
// other.
package admit
