package dhtrelay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/protomux"
	"github.com/keytunnel/keytunnel/secretstream"
	"github.com/keytunnel/keytunnel/secretstream/noise"
)

// Client errors.
var (
	// ErrStreamDestroyed: the relay or the peer destroyed the stream.
	ErrStreamDestroyed = errors.New("dhtrelay: stream destroyed")
	// ErrListenerClosed is returned by Accept after the server closed.
	ErrListenerClosed = errors.New("dhtrelay: listener closed")
)

// Conn is a relayed connection: the peer's bytes, end to end encrypted
// between the peer and whoever ran the Noise handshake (the relay for a
// custodial client, this client otherwise).
type Conn interface {
	net.Conn
	CloseWrite() error
	RemotePublicKey() key.PublicKey
}

// ClientOptions configure a Client. Zero fields mean the defaults.
type ClientOptions struct {
	// KeyPair is the default identity (Dial without a key pair); zero
	// means a random one.
	KeyPair key.KeyPair
	// NonCustodial keeps secret keys on this side: the client runs the
	// Noise handshakes and signs records itself, and the relay only sees
	// ciphertext. Custodial (the reference's default) hands the relay the
	// secret keys.
	NonCustodial bool
	Limits       Limits
	// IdleTimeout closes the client after this long without a ping from
	// the relay (45 s).
	IdleTimeout time.Duration
	// StreamBuffer bounds each stream's unread bytes (4 MiB); beyond it
	// the client stops reading the relay.
	StreamBuffer int
	Logger       *slog.Logger
}

// Client is the relayed side of the protocol (lib/node.js): a HyperDHT
// node's Dial, Listen, Lookup, Announce and Unannounce, carried over one
// framed stream to a relay.
type Client struct {
	opts      ClientOptions
	kp        key.KeyPair
	custodial bool
	log       *slog.Logger

	mux *protomux.Mux
	ch  *Channel

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	alive  chan struct{}

	mu         sync.Mutex
	sess       *Session
	streams    map[uint32]*clientStream // by the client's alias
	servers    map[uint32]*Listener     // by the client's alias
	queries    map[uint32]*Query
	handshakes map[uint32]*clientHandshake // by the relay's id
}

type clientHandshake struct {
	hs     *noise.Handshake
	kp     key.KeyPair
	server *Listener
	dial   *clientStream // an initiator's stream
	res    noise.Result
	done   bool
}

// DialClient connects to a relay at rawURL — tcp://host:port (the
// reference's secret-stream transport) or ws://, wss:// — and starts a
// Client on it. ctx bounds the connection and transport handshake.
func DialClient(ctx context.Context, rawURL string, opts ClientOptions) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("dhtrelay: relay url: %w", err)
	}
	var f protomux.Framed
	switch u.Scheme {
	case "ws", "wss":
		ws, err := DialWebSocket(ctx, rawURL, WebSocketOptions{})
		if err != nil {
			return nil, err
		}
		f = ws
	case "tcp":
		if u.Port() == "" {
			return nil, fmt.Errorf("dhtrelay: relay url %q has no port", rawURL)
		}
		var d net.Dialer
		raw, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, fmt.Errorf("dhtrelay: dialing relay: %w", err)
		}
		f, _, err = TCP(ctx, raw, true, TCPOptions{})
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("dhtrelay: relay url scheme %q, want tcp, ws or wss", u.Scheme)
	}
	return NewClient(f, opts)
}

// NewClient starts a client over f (which it closes on Close) and sends
// the handshake.
func NewClient(f protomux.Framed, opts ClientOptions) (*Client, error) {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.StreamBuffer <= 0 {
		opts.StreamBuffer = DefaultStreamBuffer
	}
	c := &Client{opts: opts, kp: opts.KeyPair, custodial: !opts.NonCustodial, log: opts.Logger,
		sess: NewSession(RoleClient, opts.Limits), alive: make(chan struct{}, 1),
		streams: map[uint32]*clientStream{}, servers: map[uint32]*Listener{}, queries: map[uint32]*Query{},
		handshakes: map[uint32]*clientHandshake{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.kp.Public.IsZero() {
		kp, err := key.Generate(rand.Reader)
		if err != nil {
			f.Close()
			return nil, err
		}
		c.kp = kp
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	ready := make(chan struct{})
	mux, ch, err := startMux(f, protomux.Options{}, ChannelOptions{OnMessage: func(m Message) {
		<-ready
		c.onMessage(m)
	}})
	if err != nil {
		return nil, err
	}
	c.mux, c.ch = mux, ch
	close(ready)
	if err := c.send(Handshake{Custodial: c.custodial, PublicKey: c.kp.Public, SecretKey: c.secret(c.kp)}); err != nil {
		c.mux.Close()
		return nil, err
	}
	c.wg.Add(1)
	go c.watch()
	return c, nil
}

// watch is the client's failsafe: no ping for IdleTimeout closes it.
func (c *Client) watch() {
	defer c.wg.Done()
	t := time.NewTimer(c.opts.IdleTimeout)
	defer t.Stop()
	for {
		select {
		case <-c.alive:
			t.Reset(c.opts.IdleTimeout)
		case <-t.C:
			c.mux.Destroy(fmt.Errorf("dhtrelay: no ping from the relay for %v", c.opts.IdleTimeout))
		case <-c.mux.Done():
			c.shutdown(c.mux.Err())
			return
		}
	}
}

// shutdown fails everything still open.
func (c *Client) shutdown(err error) {
	if err == nil || errors.Is(err, protomux.ErrClosed) {
		err = ErrClosed
	}
	c.cancel()
	c.mu.Lock()
	streams, servers, queries := c.streams, c.servers, c.queries
	c.streams, c.servers, c.queries = map[uint32]*clientStream{}, map[uint32]*Listener{}, map[uint32]*Query{}
	c.mu.Unlock()
	for _, st := range streams {
		st.fail(fmt.Errorf("%w: %w", ErrClosed, err))
	}
	for _, l := range servers {
		l.closed(err)
	}
	for _, q := range queries {
		q.finish(err)
	}
}

// Close ends the session with the relay (which closes everything it ran
// for this client) and waits. Idempotent.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mux.Close()
		c.wg.Wait()
	})
	return nil
}

// Done is closed once the client has stopped.
func (c *Client) Done() <-chan struct{} { return c.ctx.Done() }

// Err is why the relay session ended (nil while it runs).
func (c *Client) Err() error { return c.mux.Err() }

// KeyPair is the client's default identity.
func (c *Client) KeyPair() key.KeyPair { return c.kp }

func (c *Client) secret(kp key.KeyPair) SecretKey {
	var sk SecretKey
	if c.custodial {
		copy(sk[:], kp.Private)
	}
	return sk
}

func (c *Client) send(m Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLocked(m)
}

func (c *Client) sendLocked(m Message) error {
	if _, err := c.sess.Send(m); err != nil {
		return err
	}
	return c.ch.Send(m)
}

// --- streams ---

type clientStream struct {
	c         *Client
	alias     uint32
	remote    key.PublicKey
	local     key.PublicKey
	kp        key.KeyPair
	in        *chunkQueue
	opened    chan struct{}
	openErr   error
	hsID      uint32
	custodial bool

	mu        sync.Mutex
	paired    bool
	abandoned bool // the Dial gave up before open
	wroteEnd  bool
	gotEnd    bool
	// raced is closed when the relay showed its race on this dial's
	// handshake (noteRaceLocked).
	raced    chan struct{}
	raceOnce sync.Once
	gone     bool
	werr     error
}

var _ Conn = (*clientStream)(nil)

type relayAddr string

func (relayAddr) Network() string  { return "dht-relay" }
func (a relayAddr) String() string { return string(a) }

func (st *clientStream) Read(p []byte) (int, error) { return st.in.read(p) }

// maxChunk is the largest chunk one data message carries.
const maxChunk = 256 << 10

func (st *clientStream) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), maxChunk)
		if err := st.writeChunk(p[:k]); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

func (st *clientStream) writeChunk(b []byte) error {
	c := st.c
	st.mu.Lock()
	err := st.werr
	if err == nil && st.wroteEnd {
		err = net.ErrClosed
	}
	st.mu.Unlock()
	if err != nil {
		return err
	}
	m := Data{Alias: st.alias, Chunks: [][]byte{append([]byte(nil), b...)}}
	c.mu.Lock()
	_, err = c.sess.Send(m)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStreamDestroyed, err)
	}
	return c.sendWaiting(m)
}

// sendWaiting queues m, waiting while the write queue is over its bound
// (c.mu not held: the wait is for the transport). A stream's data and its
// end go this way, so that a full queue delays them instead of losing
// them.
func (c *Client) sendWaiting(m Message) error {
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

// CloseWrite sends end: the peer reads EOF.
func (st *clientStream) CloseWrite() error {
	st.mu.Lock()
	if st.wroteEnd || st.gone {
		st.mu.Unlock()
		return nil
	}
	st.wroteEnd = true
	both := st.gotEnd
	st.mu.Unlock()
	c := st.c
	m := End{Alias: st.alias}
	c.mu.Lock()
	_, err := c.sess.Send(m)
	if both {
		st.forgetLocked()
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	// Not sendLocked: an end dropped for a full write queue would leave
	// the peer waiting for EOF for good.
	return c.sendWaiting(m)
}

// forgetLocked drops a stream both sides ended (c.mu held).
func (st *clientStream) forgetLocked() {
	c := st.c
	if c.streams[st.alias] == st {
		delete(c.streams, st.alias)
		c.sess.ForgetStream(st.alias)
	}
	st.mu.Lock()
	st.gone = true
	st.mu.Unlock()
}

// Close destroys the stream unless both sides ended it. Idempotent.
func (st *clientStream) Close() error {
	c := st.c
	c.mu.Lock()
	st.mu.Lock()
	gone, paired := st.gone, st.paired
	st.gone = true
	if st.werr == nil {
		st.werr = net.ErrClosed
	}
	st.mu.Unlock()
	if !gone && c.streams[st.alias] == st {
		if paired {
			_ = c.sendLocked(Destroy{Paired: true, Alias: st.alias})
		}
		delete(c.streams, st.alias)
		c.sess.ForgetStream(st.alias)
	}
	c.mu.Unlock()
	st.in.fail(net.ErrClosed)
	return nil
}

func (st *clientStream) fail(err error) {
	st.mu.Lock()
	st.gone = true
	if st.werr == nil {
		st.werr = err
	}
	st.mu.Unlock()
	st.in.fail(err)
}

func (st *clientStream) LocalAddr() net.Addr               { return relayAddr(st.local.String()) }
func (st *clientStream) RemoteAddr() net.Addr              { return relayAddr(st.remote.String()) }
func (st *clientStream) RemotePublicKey() key.PublicKey    { return st.remote }
func (st *clientStream) SetReadDeadline(t time.Time) error { st.in.setDeadline(t); return nil }
func (st *clientStream) SetWriteDeadline(time.Time) error  { return nil }
func (st *clientStream) SetDeadline(t time.Time) error     { return st.SetReadDeadline(t) }

// secured wraps a non-custodial stream in the client's secret-stream,
// with the keys of the handshake the client ran.
type secured struct {
	*secretstream.Conn
	raw *clientStream
}

func (s secured) RemotePublicKey() key.PublicKey { return s.raw.remote }

func (c *Client) secure(ctx context.Context, st *clientStream, res noise.Result, initiator bool) (Conn, error) {
	conn, err := secretstream.New(st, secretstream.Options{IsInitiator: initiator, Handshake: &res, SendHeader: true})
	if err != nil {
		st.Close()
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := conn.Handshake(hctx); err != nil {
		conn.Close()
		return nil, err
	}
	return secured{conn, st}, nil
}

// Dial connects to the peer listening on remote, through the relay's DHT
// node, as opts.KeyPair (default: the client's key pair).
func (c *Client) Dial(ctx context.Context, remote key.PublicKey, opts *dht.DialOptions) (Conn, error) {
	conn, err := c.dial(ctx, remote, opts)
	if errors.Is(err, errRelayRaced) {
		c.log.Info("dhtrelay: the relay's connect stalled on its own race (two PEER_HANDSHAKE replies at once); dialing again", "remote", remote)
		conn, err = c.dial(ctx, remote, opts)
	}
	if errors.Is(err, errRelayRaced) {
		err = fmt.Errorf("%w: the relay's connect stalled twice on its own race (two PEER_HANDSHAKE replies at once)", ErrStreamDestroyed)
	}
	return conn, err
}

// relayRaceGrace is how long a dial waits for its open once the relay
// has shown the race of noteRaceLocked: long enough for a server that
// connects to the relay directly, which needs no hole punch.
var relayRaceGrace = 3 * time.Second

// errRelayRaced: the dial was given up after the relay's race.
var errRelayRaced = errors.New("dhtrelay: relay raced")

// noteRaceLocked spots the Node relay's race on a non-custodial dial
// (c.mu held): a second request to read the server's reply, for a
// handshake the first one completed. hyperdht's connect asks two DHT
// nodes at once (connect.js connectThroughNode), and when both relay
// the server's reply before the client's answer is back, the relay's
// HandshakeProxy keeps only the second request's promise: the client's
// one answer settles that, the first never settles (a second answer
// would crash the relay, session.noiseRequest), and connect's wait for
// all its attempts (findAndConnect's semaphore flush) never ends, so the
// hole punch after it never starts. Only a server that reaches the relay
// directly still opens the stream; for the others the dial is given up
// after relayRaceGrace and made again.
func (c *Client) noteRaceLocked(m Message) {
	v, ok := m.(NoiseReceive)
	if !ok || !v.IsInitiator {
		return
	}
	if h := c.handshakes[v.ID]; h != nil && h.done && h.dial != nil {
		h.dial.raceOnce.Do(func() { close(h.dial.raced) })
	}
}

func (c *Client) dial(ctx context.Context, remote key.PublicKey, opts *dht.DialOptions) (Conn, error) {
	kp := c.kp
	if opts != nil && !opts.KeyPair.Public.IsZero() {
		kp = opts.KeyPair
	}
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	alias := c.sess.NextID()
	st := &clientStream{c: c, alias: alias, remote: remote, local: kp.Public, kp: kp, custodial: c.custodial,
		in: newChunkQueue(c.opts.StreamBuffer), opened: make(chan struct{}), raced: make(chan struct{})}
	if err := c.sendLocked(Connect{Custodial: c.custodial, Alias: alias, PublicKey: kp.Public, SecretKey: c.secret(kp), RemotePublicKey: remote}); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.streams[alias] = st
	c.mu.Unlock()
	// abandon gives the dial up: an open that comes later closes the
	// stream (onMessage), or closes it here if it just came.
	abandon := func(err error) (Conn, error) {
		c.mu.Lock()
		for id, h := range c.handshakes {
			if h.dial == st {
				delete(c.handshakes, id)
			}
		}
		c.mu.Unlock()
		st.mu.Lock()
		st.abandoned = true
		st.mu.Unlock()
		select {
		case <-st.opened:
			if st.openErr == nil {
				st.Close()
			}
		default:
		}
		return nil, err
	}
	var grace <-chan time.Time
	raced := st.raced
	for wait := true; wait; {
		select {
		case <-st.opened:
			wait = false
		case <-raced:
			raced = nil
			t := time.NewTimer(relayRaceGrace)
			defer t.Stop()
			grace = t.C
		case <-grace:
			return abandon(errRelayRaced)
		case <-ctx.Done():
			return abandon(ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
	if st.openErr != nil {
		return nil, st.openErr
	}
	if st.custodial {
		return st, nil
	}
	c.mu.Lock()
	h := c.handshakes[st.hsID]
	delete(c.handshakes, st.hsID)
	c.mu.Unlock()
	if h == nil || !h.done {
		st.Close()
		return nil, fmt.Errorf("%w: open names no completed handshake", ErrProtocol)
	}
	return c.secure(ctx, st, h.res, true)
}

// --- listeners ---

// Listener accepts relayed connections to one key pair.
type Listener struct {
	c        *Client
	alias    uint32
	kp       key.KeyPair
	firewall dht.Firewall
	accept   chan Conn
	listened chan struct{}
	addr     netip.AddrPort
	done     chan struct{}
	once     sync.Once
	err      error
	wg       sync.WaitGroup
}

// Listen asks the relay to announce kp and accept connections to it.
func (c *Client) Listen(ctx context.Context, kp key.KeyPair, opts *dht.ListenOptions) (*Listener, error) {
	l := &Listener{c: c, kp: kp, accept: make(chan Conn, 64), listened: make(chan struct{}), done: make(chan struct{})}
	if opts != nil {
		l.firewall = opts.Firewall
	}
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	l.alias = c.sess.NextID()
	if err := c.sendLocked(Listen{Custodial: c.custodial, Alias: l.alias, PublicKey: kp.Public, SecretKey: c.secret(kp)}); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	c.servers[l.alias] = l
	c.mu.Unlock()
	select {
	case <-l.listened:
	case <-l.done:
		return nil, l.err
	case <-ctx.Done():
		l.Close()
		return nil, ctx.Err()
	}
	if !c.custodial {
		err := c.checkAnnounced(ctx, kp.Public)
		// The protocol has no failure reply to listen: a relay whose
		// listen failed answers listening and closes at once, which the
		// lookup's round trip has let arrive.
		select {
		case <-l.done:
			return nil, ErrListenRefused
		default:
		}
		if err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// announceChecks is how many lookups checkAnnounced makes, announceCheckGap
// apart, before it gives up.
const (
	announceChecks   = 3
	announceCheckGap = time.Second
)

// checkAnnounced looks pk up under its own target, where a listening
// server's announce lives, until a DHT node returns it. A relay confirms
// a listen once its announce round is done (hyperdht's server.listen
// waits for it), so the record is there at once when the announce
// worked. A non-custodial announce depends on the relay asking us for
// signatures, which the Node relay cannot do; without this check the
// listener would look fine while no client can find it.
func (c *Client) checkAnnounced(ctx context.Context, pk key.PublicKey) error {
	target := dht.Hash(pk[:])
	for i := range announceChecks {
		if i > 0 {
			select {
			case <-time.After(announceCheckGap):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		found, err := c.lookupHas(ctx, target, pk)
		if err != nil {
			return err
		}
		if found {
			return nil
		}
	}
	return fmt.Errorf("%w: the relay reports listening, but %d lookups found no DHT node holding this key's announce, so no client can find it (a Node @hyperswarm/dht-relay cannot announce for non-custodial clients: use keytunnel's dht-relay, or a custodial relay you run)", ErrNotAnnounced, announceChecks)
}

// lookupHas runs one lookup of target and reports whether any reply
// names pk.
func (c *Client) lookupHas(ctx context.Context, target [32]byte, pk key.PublicKey) (bool, error) {
	q, err := c.Lookup(ctx, target)
	if err != nil {
		return false, err
	}
	for {
		a, err := q.Next(ctx)
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		for _, p := range a.Peers {
			if p.PublicKey == pk {
				return true, nil
			}
		}
	}
}

func (l *Listener) closed(err error) {
	l.once.Do(func() {
		if err == nil {
			err = ErrListenerClosed
		}
		l.err = err
		close(l.done)
	})
}

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptConn(context.Background()) }

// AcceptConn waits for the next connection or ctx.
func (l *Listener) AcceptConn(ctx context.Context) (Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, ErrListenerClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close asks the relay to stop the server (it unannounces) and waits for
// its answer, at most 10 s. Established connections stay. Idempotent.
func (l *Listener) Close() error {
	c := l.c
	c.mu.Lock()
	if c.servers[l.alias] == l {
		select {
		case <-l.listened:
			_ = c.sendLocked(Close{Alias: l.alias})
		default:
		}
	}
	c.mu.Unlock()
	select {
	case <-l.listened:
		t := time.NewTimer(10 * time.Second)
		select {
		case <-l.done:
		case <-t.C:
		case <-c.ctx.Done():
		}
		t.Stop()
	default:
	}
	l.closed(ErrListenerClosed)
	c.mu.Lock()
	if c.servers[l.alias] == l {
		delete(c.servers, l.alias)
	}
	c.mu.Unlock()
	l.wg.Wait()
	for {
		select {
		case conn := <-l.accept:
			conn.Close()
		default:
			return nil
		}
	}
}

// Addr is the key's address.
func (l *Listener) Addr() net.Addr { return relayAddr(l.kp.Public.String()) }

// PublicKey is the key the listener serves.
func (l *Listener) PublicKey() key.PublicKey { return l.kp.Public }

// RelayAddress is the relay's DHT address, from listening.
func (l *Listener) RelayAddress() netip.AddrPort { return l.addr }

// --- queries ---

// Query is a running lookup, announce or unannounce.
type Query struct {
	id   uint32
	kp   key.KeyPair
	sign bool
	tgt  [32]byte

	mu      sync.Mutex
	results []Announcers
	wake    chan struct{}
	done    bool
	err     error
}

const maxQueryResults = 4096

func (q *Query) push(a Announcers) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.results) < maxQueryResults {
		q.results = append(q.results, a)
	}
	close(q.wake)
	q.wake = make(chan struct{})
}

func (q *Query) finish(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.done {
		q.done, q.err = true, err
		close(q.wake)
		q.wake = make(chan struct{})
	}
}

// Next returns the next reply, io.EOF once the query finished, or why
// the client stopped.
func (q *Query) Next(ctx context.Context) (Announcers, error) {
	for {
		q.mu.Lock()
		if len(q.results) > 0 {
			a := q.results[0]
			q.results = q.results[1:]
			q.mu.Unlock()
			return a, nil
		}
		if q.done {
			err := q.err
			q.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return Announcers{}, err
		}
		w := q.wake
		q.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return Announcers{}, ctx.Err()
		}
	}
}

func (c *Client) query(m Message, q *Query) (*Query, error) {
	q.wake = make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	q.id = c.sess.NextID()
	switch v := m.(type) {
	case Lookup:
		v.ID = q.id
		m = v
	case Announce:
		v.ID = q.id
		m = v
	case Unannounce:
		v.ID = q.id
		m = v
	}
	if err := c.sendLocked(m); err != nil {
		return nil, err
	}
	c.queries[q.id] = q
	return q, nil
}

// Lookup asks the relay's DHT for the peers announced under topic.
func (c *Client) Lookup(ctx context.Context, topic [32]byte) (*Query, error) {
	return c.query(Lookup{Topic: topic}, &Query{})
}

func (c *Client) waitQuery(ctx context.Context, q *Query, err error) error {
	if err != nil {
		return err
	}
	for {
		if _, err := q.Next(ctx); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// Announce stores kp's public key under topic on the nodes closest to it
// and waits until the relay reports the query finished.
func (c *Client) Announce(ctx context.Context, topic [32]byte, kp key.KeyPair) error {
	q, err := c.query(Announce{Custodial: c.custodial, Topic: topic, PublicKey: kp.Public, SecretKey: c.secret(kp)},
		&Query{kp: kp, sign: true, tgt: topic})
	return c.waitQuery(ctx, q, err)
}

// Unannounce removes kp's record under topic.
func (c *Client) Unannounce(ctx context.Context, topic [32]byte, kp key.KeyPair) error {
	q, err := c.query(Unannounce{Custodial: c.custodial, Topic: topic, PublicKey: kp.Public, SecretKey: c.secret(kp)},
		&Query{kp: kp, sign: true, tgt: topic})
	return c.waitQuery(ctx, q, err)
}

// --- received messages ---

func (c *Client) onMessage(m Message) {
	if m.Type() == TypePing {
		select {
		case c.alive <- struct{}{}:
		default:
		}
	}
	c.mu.Lock()
	a, err := c.sess.Receive(m)
	if err != nil {
		c.noteRaceLocked(m)
		c.mu.Unlock()
		c.log.Debug("dhtrelay: ignored message", "type", m.Type(), "err", err)
		return
	}
	if a.Reply != nil {
		_ = c.sendLocked(a.Reply)
	}
	switch v := m.(type) {
	case Open:
		st := c.streams[a.Stream]
		if st == nil {
			break
		}
		st.mu.Lock()
		st.paired = true
		st.hsID = v.HandshakeID
		abandoned := st.abandoned
		st.mu.Unlock()
		if v.Custodial != st.custodial {
			st.openErr = fmt.Errorf("%w: open's custodial flag does not match", ErrProtocol)
		}
		close(st.opened)
		if abandoned {
			c.mu.Unlock()
			st.Close()
			return
		}
	case Destroy:
		st := c.streams[a.Stream]
		if st == nil {
			break
		}
		delete(c.streams, a.Stream)
		err := destroyedError(v.Error)
		select {
		case <-st.opened:
		default:
			st.openErr = err
			close(st.opened)
		}
		st.fail(err)
	case Data:
		st := c.streams[a.Stream]
		c.mu.Unlock()
		if st != nil {
			for _, ch := range v.Chunks {
				if len(ch) > 0 && st.in.push(c.ctx.Done(), ch) != nil {
					break
				}
			}
		}
		return
	case End:
		st := c.streams[a.Stream]
		if st == nil {
			break
		}
		st.in.closeWrite()
		st.mu.Lock()
		st.gotEnd = true
		both := st.wroteEnd
		st.mu.Unlock()
		if both {
			st.forgetLocked()
		}
	case Listening:
		if l := c.servers[a.Server]; l != nil {
			l.addr = v.Address
			close(l.listened)
		}
	case Closed:
		if l := c.servers[a.Server]; l != nil {
			delete(c.servers, a.Server)
			l.closed(ErrListenerClosed)
		}
	case Connection:
		c.onConnection(v, a)
	case Incoming:
		deny := true
		if l := c.servers[a.Server]; l != nil {
			deny = false
			if l.firewall != nil {
				var addr netip.AddrPort
				if p, err := wire.DecodeNoisePayload(v.Payload); err == nil && len(p.Addresses4) > 0 {
					addr = p.Addresses4[0]
				}
				deny = l.firewall(v.RemotePublicKey, addr)
			}
		}
		if deny {
			_ = c.sendLocked(Deny{ID: v.ID})
		} else {
			_ = c.sendLocked(Accept{ID: v.ID})
		}
	case Result:
		if q := c.queries[a.Query]; q != nil {
			if ann, err := DecodeAnnouncers(v.Data); err == nil {
				q.push(ann)
			}
		}
	case Finished:
		if q := c.queries[a.Query]; q != nil {
			delete(c.queries, a.Query)
			q.finish(nil)
		}
	case SignAnnounce:
		c.sign(SignAnnounce(v), a.Query, wire.NSAnnounce)
	case SignUnannounce:
		c.sign(SignAnnounce(v), a.Query, wire.NSUnannounce)
	case NoiseSend:
		c.onNoise(v.ID, v.IsInitiator, a, v.Payload, true)
	case NoiseReceive:
		c.onNoise(v.ID, v.IsInitiator, a, v.Payload, false)
	}
	c.mu.Unlock()
}

// onConnection accepts an inbound stream (c.mu held).
func (c *Client) onConnection(v Connection, a Action) {
	l := c.servers[a.Server]
	st := &clientStream{c: c, alias: a.New, remote: v.RemotePublicKey, paired: true, custodial: v.Custodial,
		in: newChunkQueue(c.opts.StreamBuffer), opened: make(chan struct{})}
	close(st.opened)
	if l != nil {
		st.local = l.kp.Public
	}
	c.streams[st.alias] = st
	_ = c.sendLocked(Connected{Alias: st.alias, RemoteAlias: v.Alias})
	if l == nil {
		return
	}
	var h *clientHandshake
	if !v.Custodial {
		h = c.handshakes[v.HandshakeID]
		delete(c.handshakes, v.HandshakeID)
		if h == nil || !h.done || h.server != l {
			_ = c.sendLocked(Destroy{Paired: true, Alias: st.alias, Error: "no completed handshake"})
			delete(c.streams, st.alias)
			c.sess.ForgetStream(st.alias)
			return
		}
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		var conn Conn = st
		if h != nil {
			var err error
			conn, err = c.secure(c.ctx, st, h.res, false)
			if err != nil {
				c.log.Debug("dhtrelay: inbound secret-stream failed", "err", err)
				return
			}
		}
		select {
		case l.accept <- conn:
		case <-l.done:
			conn.Close()
		}
	}()
}

// sign answers a signature request of a non-custodial announce (c.mu
// held). signee is the query id or the client's server alias.
func (c *Client) sign(v SignAnnounce, signee uint32, ns [32]byte) {
	var kp key.KeyPair
	var target [32]byte
	if q := c.queries[signee]; q != nil && q.sign {
		kp, target = q.kp, q.tgt
	} else if l := c.servers[signee]; l != nil {
		kp, target = l.kp, dht.Hash(l.kp.Public[:])
	} else {
		return
	}
	// lib/signee.js: NS ‖ BLAKE2b(target ‖ peerId ‖ token ‖ peer{publicKey, relayAddresses}).
	b := slices.Concat(target[:], v.PeerID, v.Token[:], AppendPeer(nil, Peer{PublicKey: kp.Public, RelayAddresses: v.RelayAddresses}))
	h := dht.Hash(b)
	sig := ed25519.Sign(kp.Private, slices.Concat(ns[:], h[:]))
	_ = c.sendLocked(Signature{ID: v.ID, Signature: sig})
}

// onNoise runs one step of a non-custodial Noise handshake (c.mu held):
// send writes the next message carrying payload, receive reads one.
func (c *Client) onNoise(id uint32, initiator bool, a Action, payload []byte, send bool) {
	h := c.handshakes[id]
	if h == nil {
		var err error
		h = &clientHandshake{}
		cfg := noise.Config{Pattern: noise.IK, Initiator: initiator, Prologue: wire.NSPeerHandshake[:]}
		if initiator {
			st := c.streams[a.Stream]
			if st == nil {
				return
			}
			h.kp, h.dial = st.kp, st
			cfg.RemoteKey = st.remote
		} else {
			l := c.servers[a.Server]
			if l == nil {
				return
			}
			h.kp, h.server = l.kp, l
		}
		cfg.KeyPair = h.kp
		if h.hs, err = noise.New(cfg); err != nil {
			return
		}
		c.handshakes[id] = h
	}
	reply := NoiseReply{IsInitiator: initiator, ID: id}
	var out []byte
	var err error
	if send {
		out, err = h.hs.WriteMessage(nil, payload)
	} else {
		out, err = h.hs.ReadMessage(nil, payload)
	}
	if err != nil {
		// An empty reply: the relay's handshake fails (a responder's is
		// a denial).
		delete(c.handshakes, id)
		_ = c.sendLocked(reply)
		return
	}
	if h.hs.Complete() {
		res, err := h.hs.Result()
		if err != nil {
			delete(c.handshakes, id)
			_ = c.sendLocked(reply)
			return
		}
		h.res, h.done = res, true
		reply.Complete = true
		reply.RemoteID = secretstream.StreamID(&res.Hash, true)
		reply.HolepunchSecret = noise.HolepunchSecret(res.Hash)
	} else if !initiator {
		reply.RemotePublicKey = h.hs.RemotePublicKey()
		if l := h.server; l.firewall != nil && !send {
			var addr netip.AddrPort
			if p, err := wire.DecodeNoisePayload(out); err == nil && len(p.Addresses4) > 0 {
				addr = p.Addresses4[0]
			}
			if l.firewall(reply.RemotePublicKey, addr) {
				delete(c.handshakes, id)
				out = nil
			}
		}
	}
	reply.Payload = out
	_ = c.sendLocked(reply)
}

// destroyedError is the error of a stream the relay destroyed with text.
// A dial the server's firewall refused reads as dht.ErrRefused, as it does
// over UDP, so that callers tell it from a peer that is gone: the Go relay
// sends the dht error's text ("dht: SERVER_ERROR: ..."), the Node relay
// hyperdht's ("SERVER_ERROR: ..."); both name the code.
func destroyedError(text string) error {
	switch {
	case text == "":
		return ErrStreamDestroyed
	case strings.Contains(text, dht.ErrRefused.Code):
		return fmt.Errorf("%w: %s (%w)", ErrStreamDestroyed, text, dht.ErrRefused)
	}
	return fmt.Errorf("%w: %s", ErrStreamDestroyed, text)
}
