// Package dhtrelay implements the wire protocol of @hyperswarm/dht-relay
// 0.4.3: a HyperDHT node relayed to a client that cannot use UDP (a
// browser, a network that blocks UDP), over TCP or WebSocket.
//
// Sheet: protocol/dht-relay.md; where it and the Node source differ, the
// source (lib/messages.js, lib/codecs.js, lib/protocol.js) was followed.
package dhtrelay
