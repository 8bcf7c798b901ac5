// Package udx implements reliable, ordered, congestion-controlled streams
// over UDP that are wire-compatible with libudx (as shipped by udx-native
// 1.21.3), the transport of the HyperDHT network.
//
// An instance (UDX) owns one goroutine, its loop, which runs every protocol
// state machine; sockets (Socket) add one reader goroutine each. Streams
// are created with a local id, then Connect-ed to a peer's id and address,
// which were exchanged out of band (libudx has no handshake). A Stream is a
// net.Conn; CloseWrite sends END, Destroy sends DESTROY, Send carries
// unreliable MESSAGE datagrams. Datagrams that are not packets of a live
// stream are handed to Socket.ReadFrom, so the DHT RPC can share the port.
//
// A connected stream keeps sending to the address it was connected to;
// its firewall may let it follow the peer to a new one (FirewallRoam:
// NAT rebinding, a changed address) once the layer above has
// authenticated bytes that came from there (Authenticated, OnReceiveStall;
// roam.go says how and why). StreamOptions.Timeout lets a
// stream retransmit through a dark link for longer than libudx's six
// RTOs.
//
// The protocol code takes the current time as an argument; only the loop
// reads the clock. Congestion control is BBR v1 as libudx implements it,
// kept in microseconds, plus BBRv2's loss exit from STARTUP (a round that
// lost over 2% of its packets while a queue stood all round ends it: a
// sender held back by a window above udx, whose samples are all
// app-limited, otherwise never leaves STARTUP's 2.89x pacing), and, when
// a PROBE_BW round ends over a standing queue, a cap on the pacing at
// what the round carried and a restart of the gain cycle at its 0.75
// phase (delay jitter inflates the max filter's bandwidth, and pacing
// at it kept router buffers full); its bandwidth probe runs every third
// or fourth gain cycle instead of every one, as BBRv2 and v3 probe less
// often than v1 (each probe's queue set the bottleneck's 95th
// percentile, 20 ms on a 100 ms path), but every cycle while probes find
// more bandwidth or a pacing cap is in force; loss
// recovery is RACK-TLP with SACK; RTO follows RFC 6298 with libudx's 1 s
// floor and its non-compounding 2·RTO re-arm.
//
// Write queues at most a few milliseconds of the pacing rate (at least
// 64 KiB, at most StreamOptions.SendBuffer) ahead of the wire, like
// TCP_NOTSENT_LOWAT; bytes in flight do not count. A stream shared by
// many writers (a tunnel's yamux session) then keeps a small write from
// one of them behind that much of another's bulk, not behind megabytes.
//
// Known deviations from libudx that are invisible on the wire: ACKs are sent
// once per received batch of datagrams rather than once per DATA packet,
// ride on our DATA packets when there are any, and for a lone in-order DATA
// packet wait up to 1 ms for one (a delayed ACK, within the 2 ms that
// libudx's tail-loss probe allows for);
// pacing works at microsecond rather than millisecond granularity; the OS
// path MTU is not queried (probing finds it, up to 1500).
//
// On Linux a *net.UDPConn's datagrams move in batches (recvmmsg and
// sendmmsg); on 64-bit Linux these are raw system calls that keep the Go
// scheduler out of the way (rawmmsg_linux.go says why), and use UDP
// segmentation and receive offload where the kernel has them: a run of
// equal-size datagrams to one peer (full data packets, back to back)
// leaves as one segmented send (UDP_SEGMENT, up to 64 datagrams or 65507
// bytes), and a socket with UDP_GRO reads such runs whole into pooled
// 64 KiB buffers and splits them by the segment size the kernel reports
// (gso.go), each datagram cut to libudx's 2048-byte read as before. On loopback a run then crosses the kernel as one buffer. The
// datagrams on the wire are the same either way, and a peer without GRO
// (libudx) receives them one by one. A kernel that refuses segmented sends
// (EIO or EINVAL for a run it takes datagram by datagram) turns GSO off for
// the socket; holepunching's small sockets read without GRO, whose reader
// would hold 512 KiB; elsewhere datagrams go one per batch entry.
// BatchReader and BatchWriter lend the same system calls to a UDP socket
// of the caller's that carries no streams (keytunnel's UDP flows, towards
// their clients and services).
package udx
