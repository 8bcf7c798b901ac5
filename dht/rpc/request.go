package rpc

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/keytunnel/keytunnel/internal/compact"
	"golang.org/x/crypto/blake2b"
)

// Request is an incoming request, as a Handler sees it. Fields alias the
// datagram; copy Value to keep it past the Handler if you mutate it.
type Request struct {
	d    *DHT
	sock int

	TID      uint16
	From     netip.AddrPort // UDP source
	FromID   *ID            // the sender's id if it sent one matching From
	To       netip.AddrPort // the address the sender addressed (ours, as it sees us)
	Token    *[32]byte      // already validated when non-nil
	Internal bool
	Command  uint64
	Target   *ID
	Value    []byte
}

// Socket selects the socket a reply or relay leaves from.
type Socket int

const (
	SocketSame   Socket = iota // the socket the request came in on
	SocketServer               // the server socket
	SocketClient               // the client socket
)

// ReplyOptions adjusts Reply, Error and Relay.
type ReplyOptions struct {
	// OmitToken leaves the token out of a Reply (opts.token === false).
	OmitToken bool
	// WithToken adds a token to an Error (opts.token === true).
	WithToken bool
	// OmitCloserNodes leaves closer nodes out (opts.closerNodes === false).
	OmitCloserNodes bool
	// To sends the reply somewhere other than From (hyperdht's router).
	To     netip.AddrPort
	Socket Socket
}

func (r *Request) sockFor(o *ReplyOptions) int {
	if o != nil {
		switch o.Socket {
		case SocketServer:
			return sockServer
		case SocketClient:
			return sockClient
		}
	}
	return r.sock
}

func (r *Request) dest(o *ReplyOptions) netip.AddrPort {
	if o != nil && o.To.IsValid() {
		return o.To
	}
	return r.From
}

// Reply answers with error 0 and value (nil = no value), a fresh token
// and, when the request had a target, the closest nodes. It may be called
// from the Handler or later from any goroutine.
func (r *Request) Reply(value []byte, o *ReplyOptions) {
	token := o == nil || !o.OmitToken
	closer := o == nil || !o.OmitCloserNodes
	sock, to := r.sockFor(o), r.dest(o)
	r.d.post(func(time.Time) { r.d.sendReply(r, 0, value, token, closer, to, sock) })
}

// Error answers with an error code (no value, no token unless WithToken).
func (r *Request) Error(code uint64, o *ReplyOptions) {
	token := o != nil && o.WithToken
	closer := o == nil || !o.OmitCloserNodes
	sock, to := r.sockFor(o), r.dest(o)
	r.d.post(func(time.Time) { r.d.sendReply(r, code, nil, token, closer, to, sock) })
}

// Relay forwards the request to another node: same tid, command, internal
// flag and target, no token, the given value, `to` set to the next hop.
// Whoever answers it can reply straight to the original requester.
func (r *Request) Relay(value []byte, to netip.AddrPort, o *ReplyOptions) {
	sock := r.sockFor(o)
	r.d.post(func(time.Time) {
		d := r.d
		m := RequestMessage{TID: r.TID, To: to, Internal: r.Internal, Command: r.Command, Target: r.Target, Value: value}
		if d.sendsID(sock) {
			id := d.tbl.id
			m.ID = &id
		}
		d.write(sock, AppendRequest(nil, &m), to)
	})
}

// onRequest dispatches a request whose token (if any) is valid.
func (d *DHT) onRequest(now time.Time, req *Request, external bool) {
	if req.FromID != nil {
		d.addNodeFromNetwork(!external, req.From, req.FromID, req.To)
	}
	if !req.Internal {
		if d.cfg.Handler == nil || !d.cfg.Handler(req) {
			d.sendReply(req, CodeUnknownCommand, nil, false, req.Target != nil, req.From, req.sock)
		}
		return
	}
	switch req.Command {
	case CmdPing:
		d.sendReply(req, 0, nil, false, false, req.From, req.sock)
	case CmdDelayedPing:
		if len(req.Value) < 4 {
			return
		}
		ms := binary.LittleEndian.Uint32(req.Value)
		delay := time.Duration(ms) * time.Millisecond
		if delay > d.cfg.MaxPingDelay || d.delayed >= 1024 {
			return
		}
		d.delayed++
		d.tm.after(now, delay, func(time.Time) {
			d.delayed--
			d.sendReply(req, 0, nil, false, false, req.From, req.sock)
		})
	case CmdPingNAT:
		if len(req.Value) < 2 {
			return
		}
		port := binary.LittleEndian.Uint16(req.Value)
		if port == 0 {
			return
		}
		to := netip.AddrPortFrom(req.From.Addr(), port)
		d.sendReply(req, 0, nil, false, false, to, req.sock)
	case CmdFindNode:
		if req.Target == nil {
			return
		}
		d.sendReply(req, 0, nil, false, true, req.From, req.sock)
	case CmdDownHint:
		if len(req.Value) < 6 {
			return
		}
		if d.checks < 10 {
			id := ID(blake2b.Sum256(req.Value[:6]))
			if n := d.tbl.get(&id); n != nil && (n.pinged < d.tick || n.downHints == 0) {
				n.downHints++
				d.check(now, n)
			}
		}
		d.sendReply(req, 0, nil, false, false, req.From, req.sock)
	default:
		d.sendReply(req, CodeUnknownCommand, nil, false, req.Target != nil, req.From, req.sock)
	}
}

// encodeAddr is the 6-byte ipv4Address of a.
func encodeAddr(a netip.AddrPort) []byte { return compact.AppendIPv4Address(make([]byte, 0, 6), a) }

// Socket names the socket the request arrived on (SocketServer or
// SocketClient).
func (r *Request) Socket() Socket {
	if r.sock == sockClient {
		return SocketClient
	}
	return SocketServer
}
