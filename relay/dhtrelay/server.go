package dhtrelay

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/admit"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/protomux"
)

// Heartbeat of lib/protocol.js: the relay pings every 15 s; 45 s without a
// ping or pong destroys the transport.
const (
	DefaultPingInterval = 15 * time.Second
	DefaultIdleTimeout  = 45 * time.Second
)

// Server defaults.
const (
	DefaultMaxClients = 1024
	// DefaultStreamBuffer bounds the bytes a relayed stream holds in
	// either direction before back-pressure applies.
	DefaultStreamBuffer = 4 << 20
	// DefaultClientWriteQueue bounds the bytes queued for one client's
	// transport.
	DefaultClientWriteQueue = 16 << 20
	firewallTimeout         = 10 * time.Second
	maxErrorText            = 256
)

// ServerOptions configure a Server. Zero fields mean the defaults.
type ServerOptions struct {
	// Limits bound what one client can make the relay track.
	Limits Limits
	// MaxClients bounds concurrent clients; more are closed at once.
	MaxClients int
	// PingInterval and IdleTimeout are the heartbeat (15 s, 45 s).
	PingInterval time.Duration
	IdleTimeout  time.Duration
	// StreamBuffer bounds each relayed stream's buffer per direction.
	StreamBuffer int
	// WriteQueue bounds the bytes queued for one client's transport.
	WriteQueue int
	// TransportTimeout bounds a TCP client's secret-stream handshake
	// (default 10 s).
	TransportTimeout time.Duration
	// RequestTimeout bounds the wait for a non-custodial client's
	// noiseReply or signature (default 10 s; the reference waits forever).
	RequestTimeout time.Duration
	// MaxClientsPerSource bounds the clients of one source (an IPv4
	// address or IPv6 /64; default 32).
	MaxClientsPerSource int
	// MaxPending and MaxPendingPerSource bound connections that have not
	// completed their first exchange, in total (default 128) and per
	// source (8); more are closed at once, before any handshake work.
	MaxPending          int
	MaxPendingPerSource int
	// FirstMessageTimeout bounds the wait for a new connection's first
	// bytes (default 3 s).
	FirstMessageTimeout time.Duration
	// BehindProxy takes a WebSocket client's address from
	// X-Forwarded-For (for logs and the per-source client cap; the
	// pending caps see the proxy's address).
	BehindProxy bool
	Logger      *slog.Logger
}

// Server relays a DHT node to clients of the @hyperswarm/dht-relay
// protocol (lib/node-proxy.js): each client's connects become Dials,
// its listens Listeners, its lookups and announces queries of the node.
// It serves custodial clients (which send their secret keys) and
// non-custodial ones (which run their handshakes and signatures
// themselves); see the package documentation.
type Server struct {
	node *dht.Node
	opts ServerOptions
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	pending admit.Counter // connections before their first exchange
	sources admit.Counter // clients, per source

	mu      sync.Mutex
	clients map[*serverClient]struct{}
	closed  bool
	wg      sync.WaitGroup
	once    sync.Once
}

// NewServer returns a relay for node. The node stays the caller's.
func NewServer(node *dht.Node, opts ServerOptions) *Server {
	if opts.MaxClients <= 0 {
		opts.MaxClients = DefaultMaxClients
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = DefaultPingInterval
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.StreamBuffer <= 0 {
		opts.StreamBuffer = DefaultStreamBuffer
	}
	if opts.WriteQueue <= 0 {
		opts.WriteQueue = DefaultClientWriteQueue
	}
	if opts.TransportTimeout <= 0 {
		opts.TransportTimeout = 10 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	opts.MaxClientsPerSource = cmp.Or(max(opts.MaxClientsPerSource, 0), DefaultMaxClientsPerSource)
	opts.MaxPending = cmp.Or(max(opts.MaxPending, 0), DefaultMaxPending)
	opts.MaxPendingPerSource = cmp.Or(max(opts.MaxPendingPerSource, 0), DefaultMaxPendingPerSource)
	opts.FirstMessageTimeout = cmp.Or(max(opts.FirstMessageTimeout, 0), DefaultFirstMessageTimeout)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{node: node, opts: opts, log: log, clients: map[*serverClient]struct{}{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Clients returns how many clients are connected.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// Close disconnects every client (their listeners unannounce) and waits.
// Idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// Serve accepts TCP clients on l (the reference's TCP transport,
// secret-stream as responder) until l or the server closes. It closes l.
// Accept errors (such as running out of file descriptors) are retried
// with a backoff; connections over the pending caps are closed at once,
// and a connection must send its first bytes within FirstMessageTimeout.
func (s *Server) Serve(l net.Listener) error {
	stop := context.AfterFunc(s.ctx, func() { l.Close() })
	defer stop()
	defer l.Close()
	for {
		c, err := acceptRetrying(s.ctx, l, s.log)
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrClosed
			}
			return err
		}
		src := admit.Source(c.RemoteAddr().String())
		if err := s.admitPending(src); err != nil {
			s.log.Debug("dhtrelay: connection refused", "remote", c.RemoteAddr(), "err", err)
			c.Close()
			continue
		}
		go func() {
			f, err := s.handshakeTCP(s.ctx, withFirstMessageTimeout(c, s.opts.FirstMessageTimeout), c.RemoteAddr())
			s.pending.Release(src)
			if err == nil {
				_ = s.ServeFramed(s.ctx, f, c.RemoteAddr().String())
			}
		}()
	}
}

// ServeTCP runs one TCP client on raw until it leaves; it closes raw.
func (s *Server) ServeTCP(ctx context.Context, raw net.Conn) error {
	f, err := s.handshakeTCP(ctx, raw, raw.RemoteAddr())
	if err != nil {
		return err
	}
	return s.ServeFramed(ctx, f, raw.RemoteAddr().String())
}

func (s *Server) handshakeTCP(ctx context.Context, raw net.Conn, remote net.Addr) (protomux.Framed, error) {
	hctx, cancel := context.WithTimeout(ctx, s.opts.TransportTimeout)
	stop := context.AfterFunc(s.ctx, cancel)
	f, _, err := TCP(hctx, raw, false, TCPOptions{})
	stop()
	cancel()
	if err != nil {
		s.log.Debug("dhtrelay: tcp transport failed", "remote", remote, "err", err)
		return nil, err
	}
	return f, nil
}

// ServeHTTP upgrades a request to the reference's WebSocket transport and
// runs the client until it leaves.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := AcceptWebSocket(w, r, WebSocketOptions{})
	if err != nil {
		s.log.Debug("dhtrelay: websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	remote := r.RemoteAddr
	if s.opts.BehindProxy {
		if f := r.Header.Get("X-Forwarded-For"); f != "" {
			remote = strings.TrimSpace(strings.Split(f, ",")[0])
		}
	}
	_ = s.ServeFramed(r.Context(), ws, remote)
}

// ServeFramed runs the relay protocol for one client over f until the
// client leaves, the heartbeat fails, ctx ends or the server closes. It
// closes f and returns why the session ended.
func (s *Server) ServeFramed(ctx context.Context, f protomux.Framed, remote string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		f.Close()
		return ErrClosed
	}
	if len(s.clients) >= s.opts.MaxClients {
		s.mu.Unlock()
		f.Close()
		s.log.Warn("dhtrelay: too many clients", "remote", remote, "max", s.opts.MaxClients)
		return fmt.Errorf("%w: %d clients", ErrLimit, s.opts.MaxClients)
	}
	src := admit.Source(remote)
	if !s.sources.Acquire(src, s.opts.MaxClients, s.opts.MaxClientsPerSource) {
		s.mu.Unlock()
		f.Close()
		s.log.Warn("dhtrelay: too many clients from one source", "remote", remote, "source", src, "max", s.opts.MaxClientsPerSource)
		return fmt.Errorf("%w: %d clients from %s", ErrLimit, s.opts.MaxClientsPerSource, src)
	}
	defer s.sources.Release(src)
	c := &serverClient{s: s, remote: remote, sess: NewSession(RoleRelay, s.opts.Limits),
		streams: map[uint32]*relayStream{}, servers: map[uint32]*relayServer{}, firewall: map[uint32]chan bool{},
		queries: map[uint32]context.CancelFunc{}, noise: map[uint32]*relayHandshake{}, signatures: map[uint32]chan []byte{},
		alive: make(chan struct{}, 1)}
	s.clients[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
	}()
	return c.run(ctx, f)
}

// serverClient is one relayed client (lib/node-proxy.js's NodeProxy).
type serverClient struct {
	s      *Server
	remote string
	ctx    context.Context
	cancel context.CancelFunc
	mux    *protomux.Mux
	ch     *Channel
	wg     sync.WaitGroup
	alive  chan struct{}

	mu         sync.Mutex // sess and the maps; held while sending so that state and wire order agree
	sess       *Session
	custodial  bool
	defaultKP  key.KeyPair
	streams    map[uint32]*relayStream // by the relay's alias
	servers    map[uint32]*relayServer // by the relay's alias
	firewall   map[uint32]chan bool
	queries    map[uint32]context.CancelFunc
	noise      map[uint32]*relayHandshake // non-custodial handshakes waiting for a noiseReply, by id
	signatures map[uint32]chan []byte     // signature requests, by id
	handshaken bool
}

type relayStream struct {
	alias  uint32
	conn   net.Conn
	closeW func() error
	in     *chunkQueue  // client → peer
	ended  [2]bool      // [0] client ended, [1] peer ended
	halves atomic.Int32 // directions finished; the second closes conn
}

// halfDone records one direction finished; after both the conn closes.
func (st *relayStream) halfDone() {
	if st.halves.Add(1) == 2 {
		st.conn.Close()
	}
}

type relayServer struct {
	alias    uint32
	l        *dht.Listener
	closing  bool
	listened chan struct{}
}

func (c *serverClient) run(ctx context.Context, f protomux.Framed) error {
	s := c.s
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	stopCtx := context.AfterFunc(ctx, c.cancel)
	defer stopCtx()
	// The session's fields are set before the first message can arrive.
	var ready = make(chan struct{})
	mux, ch, err := startMux(f, protomux.Options{MaxWriteQueue: s.opts.WriteQueue}, ChannelOptions{OnMessage: func(m Message) {
		<-ready
		c.onMessage(m)
	}})
	if err != nil {
		c.cancel()
		return err
	}
	c.mux, c.ch = mux, ch
	close(ready)
	s.log.Debug("dhtrelay: client connected", "remote", c.remote)

	// Heartbeat: ping every PingInterval; IdleTimeout without ping or
	// pong from the client destroys the transport. Unlike the reference,
	// the failsafe is armed from the start, so a client that never
	// answers cannot hold a slot.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		tick := time.NewTicker(s.opts.PingInterval)
		defer tick.Stop()
		idle := time.NewTimer(s.opts.IdleTimeout)
		defer idle.Stop()
		for {
			select {
			case <-tick.C:
				_ = c.send(Ping{})
			case <-c.alive:
				idle.Reset(s.opts.IdleTimeout)
			case <-idle.C:
				s.log.Debug("dhtrelay: client idle, closing", "remote", c.remote)
				c.mux.Destroy(fmt.Errorf("dhtrelay: no ping or pong for %v", s.opts.IdleTimeout))
				return
			case <-c.ctx.Done():
				return
			}
		}
	}()

	select {
	case <-c.mux.Done():
	case <-c.ctx.Done():
	}
	c.cancel()
	c.mux.Close()
	err = c.mux.Err()
	c.teardown()
	c.wg.Wait()
	s.log.Debug("dhtrelay: client left", "remote", c.remote, "err", err)
	return err
}

// teardown closes everything the client opened.
func (c *serverClient) teardown() {
	c.mu.Lock()
	streams := c.streams
	c.streams = map[uint32]*relayStream{}
	servers := c.servers
	c.servers = map[uint32]*relayServer{}
	for _, fw := range c.firewall {
		select {
		case fw <- true:
		default:
		}
	}
	c.mu.Unlock()
	for _, st := range streams {
		st.in.fail(ErrClosed)
		st.conn.Close()
	}
	var wg sync.WaitGroup
	for _, sv := range servers {
		if sv.l != nil {
			wg.Add(1)
			go func() { defer wg.Done(); sv.l.Close() }()
		}
	}
	wg.Wait()
}

// send records m in the session and queues it.
func (c *serverClient) send(m Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLocked(m)
}

func (c *serverClient) sendLocked(m Message) error {
	if _, err := c.sess.Send(m); err != nil {
		return err
	}
	return c.ch.Send(m)
}

// sendData queues data, waiting for the transport when the client's
// write queue is full: a client that does not read stalls its streams
// (and, through udx flow control, their peers) rather than the relay's
// memory.
func (c *serverClient) sendData(alias uint32, chunk []byte) error {
	m := Data{Alias: alias, Chunks: [][]byte{chunk}}
	c.mu.Lock()
	if _, err := c.sess.Send(m); err != nil {
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	for {
		err := c.ch.Send(m)
		if !errors.Is(err, protomux.ErrWriteQueueFull) {
			return err
		}
		if err := c.mux.Flush(c.ctx); err != nil {
			return err
		}
	}
}

func (c *serverClient) markAlive() {
	select {
	case c.alive <- struct{}{}:
	default:
	}
}

func errText(err error) string {
	s := err.Error()
	if len(s) > maxErrorText {
		s = s[:maxErrorText]
	}
	return s
}

func keyPairOf(pk key.PublicKey, sk *SecretKey) (key.KeyPair, error) {
	priv := ed25519.NewKeyFromSeed(sk[:32])
	if !bytes.Equal(priv[32:], pk[:]) || !bytes.Equal(sk[32:], pk[:]) {
		return key.KeyPair{}, errors.New("dhtrelay: secret key does not match public key")
	}
	return key.KeyPair{Public: pk, Private: priv}, nil
}

// onMessage runs on the Mux's dispatcher, in wire order.
func (c *serverClient) onMessage(m Message) {
	switch m.(type) {
	case Ping, Pong:
		c.markAlive()
	}
	c.mu.Lock()
	a, err := c.sess.Receive(m)
	if err != nil {
		c.mu.Unlock()
		c.refuse(m, err)
		return
	}
	if a.Reply != nil {
		_ = c.sendLocked(a.Reply)
	}
	defer c.mu.Unlock()
	switch v := m.(type) {
	case Handshake:
		c.custodial = v.Custodial
		if v.Custodial {
			if kp, err := keyPairOf(v.PublicKey, &v.SecretKey); err == nil {
				c.defaultKP = kp
			}
		}
	case Connect:
		c.onConnect(v, a.New)
	case Data:
		if st := c.streams[a.Stream]; st != nil {
			for _, ch := range v.Chunks {
				if len(ch) == 0 {
					continue
				}
				// Waiting here is back-pressure on the whole client; the
				// bound is per stream.
				c.mu.Unlock()
				err := st.in.push(c.ctx.Done(), ch)
				c.mu.Lock()
				if err != nil {
					break
				}
			}
		}
	case End:
		if st := c.streams[a.Stream]; st != nil {
			st.in.closeWrite()
			st.ended[0] = true
			c.maybeForgetLocked(st)
		}
	case Destroy:
		if st := c.streams[a.Stream]; st != nil {
			delete(c.streams, a.Stream)
			st.in.fail(errors.New("dhtrelay: destroyed by client"))
			go st.conn.Close()
		}
	case Connected:
		// The client's alias is now known; nothing else to do.
	case Listen:
		c.onListen(v, a.New)
	case Close:
		if sv := c.servers[a.Server]; sv != nil && !sv.closing {
			sv.closing = true
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				<-sv.listened
				if sv.l != nil {
					sv.l.Close()
				}
			}()
		}
	case Accept, Deny:
		if fw := c.firewall[a.Request]; fw != nil {
			delete(c.firewall, a.Request)
			fw <- m.Type() == TypeDeny
		}
	case Lookup:
		c.onQuery(a.Query, func(ctx context.Context) error {
			q := c.s.node.Lookup(ctx, v.Topic)
			defer q.Close()
			for r := range q.All(ctx) {
				if err := c.send(Result{ID: v.ID, Data: announcersOf(r).Append(nil)}); err != nil {
					return err
				}
			}
			return q.Err()
		})
	case Announce:
		c.onSigned(a.Query, Announce(v), false)
	case Unannounce:
		c.onSigned(a.Query, Announce(v), true)
	case Signature:
		if ch := c.signatures[a.Request]; ch != nil {
			delete(c.signatures, a.Request)
			ch <- v.Signature
		}
	case NoiseReply:
		c.onNoiseReplyLocked(a.Request, v)
	}
}

// refuse handles a message the session did not accept: the reference
// ignores those; limits get a clear answer where the protocol has one.
func (c *serverClient) refuse(m Message, err error) {
	c.s.log.Debug("dhtrelay: ignored message", "remote", c.remote, "type", m.Type(), "err", err)
	if !errors.Is(err, ErrLimit) {
		return
	}
	switch v := m.(type) {
	case Connect:
		// Sent outside the session: the stream was never tracked.
		_ = c.ch.Send(Destroy{RemoteAlias: v.Alias, Error: errText(err)})
	case Lookup:
		_ = c.ch.Send(Finished{ID: v.ID})
	case Announce:
		_ = c.ch.Send(Finished{ID: v.ID})
	case Unannounce:
		_ = c.ch.Send(Finished{ID: v.ID})
	}
}

func announcersOf(r dht.LookupReply) Announcers {
	a := Announcers{From: NodeAddr{Address: ipv4(r.From)}, To: NodeAddr{Address: ipv4(r.To)}}
	if r.Token != nil {
		a.Token = *r.Token
	}
	if r.FromID != nil {
		a.From.ID = r.FromID[:]
	}
	for _, p := range r.Peers {
		a.Peers = append(a.Peers, Peer{PublicKey: p.PublicKey, RelayAddresses: p.RelayAddresses})
	}
	return a
}

func ipv4(a netip.AddrPort) netip.AddrPort {
	ip := a.Addr().Unmap()
	if !ip.Is4() {
		ip = netip.IPv4Unspecified()
	}
	return netip.AddrPortFrom(ip, a.Port())
}

func (c *serverClient) onQuery(id uint32, run func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(c.ctx)
	c.queries[id] = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		if err := run(ctx); err != nil && !errors.Is(err, io.EOF) {
			c.s.log.Debug("dhtrelay: query failed", "remote", c.remote, "id", id, "err", err)
		}
		c.mu.Lock()
		delete(c.queries, id)
		_ = c.sendLocked(Finished{ID: id})
		c.mu.Unlock()
	}()
}

func (c *serverClient) onSigned(id uint32, v Announce, un bool) {
	c.onQuery(id, func(ctx context.Context) error {
		if !v.Custodial {
			s := c.signer(id, v.PublicKey)
			if un {
				return c.s.node.UnannounceSigned(ctx, v.Topic, v.PublicKey, s)
			}
			return c.s.node.Announce(ctx, v.Topic, key.KeyPair{Public: v.PublicKey}, nil, &dht.AnnounceOptions{Signer: s})
		}
		kp, err := keyPairOf(v.PublicKey, &v.SecretKey)
		if err != nil {
			return err
		}
		if un {
			return c.s.node.Unannounce(ctx, v.Topic, kp)
		}
		return c.s.node.Announce(ctx, v.Topic, kp, nil, nil)
	})
}

// onConnect dials for the client (with c.mu held). alias is the relay's.
func (c *serverClient) onConnect(v Connect, alias uint32) {
	fail := func(err error) {
		_ = c.sendLocked(Destroy{RemoteAlias: v.Alias, Error: errText(err)})
	}
	if !v.Custodial {
		c.dialNonCustodial(v, alias)
		return
	}
	kp, err := keyPairOf(v.PublicKey, &v.SecretKey)
	if err != nil {
		fail(err)
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		conn, err := c.s.node.Dial(c.ctx, v.RemotePublicKey, &dht.DialOptions{KeyPair: kp})
		c.mu.Lock()
		if err != nil {
			c.s.log.Debug("dhtrelay: connect failed", "remote", c.remote, "peer", v.RemotePublicKey, "err", err)
			fail(err)
			c.mu.Unlock()
			return
		}
		if c.ctx.Err() != nil {
			c.mu.Unlock()
			conn.Close()
			return
		}
		st := c.newStreamLocked(alias, conn, conn.CloseWrite)
		err = c.sendLocked(Open{Custodial: true, Alias: alias, RemoteAlias: v.Alias, HandshakeHash: conn.HandshakeHash()})
		c.mu.Unlock()
		if err != nil {
			conn.Close()
			return
		}
		c.pump(st)
	}()
}

func (c *serverClient) newStreamLocked(alias uint32, conn net.Conn, closeW func() error) *relayStream {
	st := &relayStream{alias: alias, conn: conn, closeW: closeW, in: newChunkQueue(c.s.opts.StreamBuffer)}
	c.streams[alias] = st
	return st
}

// maybeForgetLocked drops a stream both sides have ended.
func (c *serverClient) maybeForgetLocked(st *relayStream) {
	if st.ended[0] && st.ended[1] && c.streams[st.alias] == st {
		delete(c.streams, st.alias)
		c.sess.ForgetStream(st.alias)
	}
}

// pump copies a stream both ways until it ends. It returns when the
// peer-to-client half is done; the other half runs on.
func (c *serverClient) pump(st *relayStream) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			b, err := st.in.next(c.ctx)
			if err == io.EOF {
				_ = st.closeW()
				st.halfDone()
				return
			}
			if err != nil {
				return
			}
			if _, err := st.conn.Write(b); err != nil {
				c.destroyStream(st, err)
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := st.conn.Read(buf)
		if n > 0 {
			if serr := c.sendData(st.alias, bytes.Clone(buf[:n])); serr != nil {
				st.conn.Close()
				return
			}
		}
		if err == io.EOF {
			c.mu.Lock()
			if c.streams[st.alias] == st {
				_ = c.sendLocked(End{Alias: st.alias})
				st.ended[1] = true
				c.maybeForgetLocked(st)
			}
			c.mu.Unlock()
			st.halfDone()
			return
		}
		if err != nil {
			c.destroyStream(st, err)
			return
		}
	}
}

// destroyStream reports a stream's failure to the client and drops it.
func (c *serverClient) destroyStream(st *relayStream, err error) {
	c.mu.Lock()
	if c.streams[st.alias] == st {
		delete(c.streams, st.alias)
		_ = c.sendLocked(Destroy{Paired: true, Alias: st.alias, Error: errText(err)})
	}
	c.mu.Unlock()
	st.in.fail(err)
	st.conn.Close()
}

// onListen starts a server for the client (with c.mu held). alias is the
// relay's.
func (c *serverClient) onListen(v Listen, alias uint32) {
	sv := &relayServer{alias: alias, listened: make(chan struct{})}
	c.servers[alias] = sv
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		l, err := c.listen(v, alias)
		c.mu.Lock()
		sv.l = l
		close(sv.listened)
		if err != nil {
			// The protocol has no failure message for listen: answer
			// listening then closed, which ends a Node client's listen()
			// and its server.
			c.s.log.Info("dhtrelay: listen failed", "remote", c.remote, "key", v.PublicKey, "err", err)
			_ = c.sendLocked(Listening{Alias: alias, RemoteAlias: v.Alias, Address: ipv4(c.s.node.LocalAddr())})
			delete(c.servers, alias)
			_ = c.sendLocked(Closed{Alias: alias})
			c.mu.Unlock()
			return
		}
		if c.servers[alias] != sv { // the client left
			c.mu.Unlock()
			l.Close()
			return
		}
		_ = c.sendLocked(Listening{Alias: alias, RemoteAlias: v.Alias, Address: ipv4(c.s.node.LocalAddr())})
		c.mu.Unlock()
		for {
			conn, m, err := c.acceptFor(l, alias, v.Custodial)
			if err != nil {
				break
			}
			c.mu.Lock()
			if c.ctx.Err() != nil {
				c.mu.Unlock()
				conn.Close()
				break
			}
			sa := c.sess.NextID()
			m.Alias = sa
			if !m.Custodial {
				// The handshake id names the client's Noise state.
				h, _ := conn.(*dht.RawConn).Handshaker().(*relayHandshake)
				id, ok := h.claimLocked(c)
				if !ok {
					c.mu.Unlock()
					conn.Close()
					continue
				}
				m.HandshakeID = id
			}
			if err := c.sendLocked(m); err != nil {
				c.mu.Unlock()
				conn.Close()
				continue
			}
			st := c.newStreamLocked(sa, conn, conn.(interface{ CloseWrite() error }).CloseWrite)
			c.mu.Unlock()
			c.wg.Add(1)
			go func() { defer c.wg.Done(); c.pump(st) }()
		}
		c.mu.Lock()
		if c.servers[alias] == sv {
			delete(c.servers, alias)
			_ = c.sendLocked(Closed{Alias: alias})
		}
		c.mu.Unlock()
	}()
}

func (c *serverClient) listen(v Listen, alias uint32) (*dht.Listener, error) {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if !v.Custodial {
		if err := c.proveKey(ctx, v.Alias, v.PublicKey); err != nil {
			return nil, err
		}
		// The client's firewall runs inside its Noise responder.
		return c.s.node.Listen(ctx, key.KeyPair{Public: v.PublicKey}, &dht.ListenOptions{
			Handshakes: func() dht.Handshaker { return c.newHandshake(false, 0, alias, key.PublicKey{}) },
			Signer:     c.signer(v.Alias, v.PublicKey),
		})
	}
	kp, err := keyPairOf(v.PublicKey, &v.SecretKey)
	if err != nil {
		return nil, err
	}
	fw := func(remote key.PublicKey, addr netip.AddrPort) bool { return c.askFirewall(alias, remote, addr) }
	return c.s.node.Listen(ctx, kp, &dht.ListenOptions{Firewall: fw})
}

// askFirewall is a custodial server's firewall: the client answers
// incoming with accept or deny. No answer within 10 s denies.
func (c *serverClient) askFirewall(server uint32, remote key.PublicKey, addr netip.AddrPort) bool {
	// The reference forwards the connecting peer's noisePayload; the dht
	// firewall hook sees only the key and address, so the payload is a
	// minimal one carrying that address (Node clients decode it).
	p := wire.NoisePayload{Version: 1, Firewall: wire.FirewallUnknown}
	if a := ipv4(addr); a.Addr().Is4() && !a.Addr().IsUnspecified() {
		p.Addresses4 = []netip.AddrPort{a}
	}
	verdict := make(chan bool, 1)
	c.mu.Lock()
	id := c.sess.NextID()
	if err := c.sendLocked(Incoming{ID: id, ServerAlias: server, RemotePublicKey: remote, Payload: p.Append(nil)}); err != nil {
		c.mu.Unlock()
		return true
	}
	c.firewall[id] = verdict
	c.mu.Unlock()
	t := time.NewTimer(firewallTimeout)
	defer t.Stop()
	select {
	case deny := <-verdict:
		return deny
	case <-t.C:
	case <-c.ctx.Done():
	}
	c.mu.Lock()
	delete(c.firewall, id)
	c.mu.Unlock()
	return true
}
