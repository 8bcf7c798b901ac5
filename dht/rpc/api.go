package rpc

import (
	"context"
	"encoding/binary"
	"net/netip"
	"time"
)

// RequestOptions describes a request sent with DHT.Request.
type RequestOptions struct {
	Token    *[32]byte
	Internal bool // dht-rpc's own command space (flag 0x04)
	Command  uint64
	Target   *ID
	Value    []byte
	// NoRetry sends once (retry: false); otherwise up to 4 times.
	NoRetry bool
	// Timeout per attempt; 0 means 1 s.
	Timeout time.Duration
	// FirstTimeout, when shorter than Timeout, is the first attempt's
	// timeout instead: each retry doubles it, up to Timeout, and retries go
	// on until the attempts have waited as long as the plain ones would
	// have (retries+1 Timeouts). For a request whose round trip is known
	// (the node just answered a query): a lost packet costs a few round
	// trips, not a second, and a slow answer is still waited for.
	FirstTimeout time.Duration
	// Socket picks the sending socket (default: the client socket while
	// firewalled, else the server socket).
	Socket Socket
}

// Request sends one request and waits for its reply. A reply with a
// non-zero error code is returned as is (see Response.Err), as the
// reference resolves it; errors are ErrTimeout, ErrClosed or ctx's.
func (d *DHT) Request(ctx context.Context, to netip.AddrPort, o RequestOptions) (*Response, error) {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	if !to.Addr().Is4() {
		return nil, ErrNotIPv4
	}
	type result struct {
		res *Response
		err error
	}
	ch := make(chan result, 1)
	var r *outReq
	ok := d.post(func(now time.Time) {
		r = d.newReq(to, o.Token, o.Internal, o.Command, o.Target, o.Value)
		if r == nil {
			ch <- result{err: ErrClosed}
			return
		}
		switch o.Socket {
		case SocketServer:
			r.sock = sockServer
		case SocketClient:
			r.sock = sockClient
		}
		if o.NoRetry {
			r.retries = 0
		}
		r.timeout = o.Timeout
		r.firstTimeout = o.FirstTimeout
		r.onResponse = func(_ time.Time, res *Response) { ch <- result{res: res} }
		r.onError = func(_ time.Time, err error) { ch <- result{err: err} }
		d.send(now, r, false)
	})
	if !ok {
		return nil, ErrClosed
	}
	select {
	case x := <-ch:
		return x.res, x.err
	case <-d.closed:
		select {
		case x := <-ch:
			return x.res, x.err
		default:
		}
		return nil, ErrClosed
	case <-ctx.Done():
		d.post(func(now time.Time) {
			if r != nil {
				d.destroyReq(now, r, ErrDestroyed)
			}
		})
		return nil, ctx.Err()
	}
}

// Ping sends an internal PING. The reply's To is our address as to sees it.
func (d *DHT) Ping(ctx context.Context, to netip.AddrPort) (*Response, error) {
	return d.Request(ctx, to, RequestOptions{Internal: true, Command: CmdPing})
}

// PingNAT asks to to reply to our server socket's port (PING_NAT). It
// tells whether unsolicited datagrams reach that port.
func (d *DHT) PingNAT(ctx context.Context, to netip.AddrPort) (*Response, error) {
	v := binary.LittleEndian.AppendUint16(nil, d.serverPort())
	return d.Request(ctx, to, RequestOptions{Internal: true, Command: CmdPingNAT, Value: v})
}

// DelayedPing asks to to answer after delay (DELAYED_PING).
func (d *DHT) DelayedPing(ctx context.Context, to netip.AddrPort, delay time.Duration) (*Response, error) {
	v := binary.LittleEndian.AppendUint32(nil, uint32(delay/time.Millisecond))
	return d.Request(ctx, to, RequestOptions{Internal: true, Command: CmdDelayedPing, Value: v, Timeout: delay + time.Second})
}

// FindNode starts an iterative FIND_NODE lookup for target.
func (d *DHT) FindNode(ctx context.Context, target ID, opts *QueryOptions) *Query {
	return d.startQuery(ctx, target, true, CmdFindNode, nil, opts)
}

// Query starts an iterative lookup for target with an application
// (non-internal) command, as hyperdht's LOOKUP/ANNOUNCE: every node on
// the way gets {command, target, value}; replies stream through Next.
func (d *DHT) Query(ctx context.Context, target ID, command uint64, value []byte, opts *QueryOptions) *Query {
	return d.startQuery(ctx, target, false, command, value, opts)
}

func (d *DHT) startQuery(ctx context.Context, target ID, internal bool, command uint64, value []byte, opts *QueryOptions) *Query {
	q := d.newQuery(target, internal, command, value, opts)
	if !d.post(func(now time.Time) {
		if d.closedLoop {
			q.ended = true
			q.err = ErrClosed
			close(q.done)
			return
		}
		d.refreshTicks = refreshTicks
		q.start(now)
	}) {
		q.err = ErrClosed
		close(q.done)
		return q
	}
	if ctx.Done() != nil {
		go func() {
			select {
			case <-ctx.Done():
				d.post(func(now time.Time) { q.finish(now, ctx.Err()) })
			case <-q.done:
			case <-d.closed:
			}
		}()
	}
	return q
}
