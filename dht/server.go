package dht

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keytunnel/keytunnel/dht/rpc"
	"github.com/keytunnel/keytunnel/dht/wire"
	"github.com/keytunnel/keytunnel/holepunch"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/secretstream"
	"github.com/keytunnel/keytunnel/udx"
)

// Timeouts of hyperdht's server (lib/server.js, lib/announcer.js).
const (
	handshakeClearWait   = 10 * time.Second // a slot outlives its decision this long
	handshakeInitialWait = 10 * time.Second // prepunch: the client must show up by then
	connectionKeepAlive  = 5 * time.Second
	openTimeout          = 20 * time.Second // secret-stream header exchange
	announceRelays       = 3
	relayPingInterval    = 3 * time.Second
	relayPingRounds      = 100 // ≈ 5 min between re-announces
	maxHandshakeSlots    = 4096
	// Fresh handshakes one client source (an IPv4 address or IPv6 /64,
	// whatever the port, loopback included) may make the listener run: each costs
	// Ed25519 and X25519 work before the firewall can say no. An honest
	// client makes a few; over the limit, a handshake gets silence.
	handshakeRate    = 50
	handshakeBurst   = 100
	maxRefusalMemory = 1024 // refused msg1s remembered, so repeats cost nothing
	// After a handshake from our own key (another process holding it,
	// probing before it announces), who holds the key is checked every
	// relay ping round for this long: long enough for that process's
	// announce to land, even across the Internet.
	siblingWatch = time.Minute
)

// Listener accepts encrypted connections to one key pair.
type Listener struct {
	n      *Node
	kp     key.KeyPair
	target [32]byte
	opts   ListenOptions

	accept    chan *Conn
	raw       chan *RawConn // instead of accept, with ListenOptions.Handshakes
	signer    Signer
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu         sync.Mutex
	closing    bool // set before wg.Wait: spawn refuses from then on
	slots      []*slot
	connects   map[string]*slot
	refused    map[string]refusal // answers to refused msg1s, which hold no slot
	limiter    *rpc.RateLimiter   // fresh handshakes per client source
	relays     []wire.RelayInfo
	relayAddrs []netip.AddrPort
	announced  []netip.AddrPort         // nodes holding our current announce
	probes     map[string]chan struct{} // our own Probes in flight, by msg1
	sibling    chan struct{}            // a handshake from our own key arrived
}

// slot is one client handshake (hyperdht's _holepunches entry). Its index
// is the holepunch id the client sends back in PEER_HOLEPUNCH.
type slot struct {
	id    int
	key   string
	ready chan struct{}
	msg2  []byte // nil: refused, silence

	res      HandshakeResult
	remoteID uint32
	stream   *udx.Stream
	secure   *wire.SecurePayload

	once      sync.Once // onsocket
	decided   chan struct{}
	clearOnce sync.Once

	// A relayed slot (link set) keeps punching; the first direct path
	// closes direct, and the stream moves there (upgradeOnce).
	link        atomic.Pointer[relayLink]
	direct      chan struct{}
	directOnce  sync.Once
	upgradeOnce sync.Once
	// answered: when msg2 was ready to go back (UnixNano), for the
	// stream's RTT hint.
	answered atomic.Int64
	// roam is set once the stream is connected on a direct path: the
	// client's authenticated data from a new address then moves it
	// (udx.FirewallRoam: its NAT lost the mapping, or its address
	// changed).
	roam atomic.Bool

	mu             sync.Mutex
	hs             Handshaker // nil once closed
	round          uint64
	remoteFirewall wire.Firewall
	remoteAddrs    []holepunch.Remote
	remotePunching bool
	punching       bool
	puncher        *holepunch.Puncher
	pool           *punchPool
	relayPending   bool                      // a blind-relay pairing is under way
	directGaveUp   bool                      // abortSlot ran while relayPending: the relay is all that is left
	relayFrom      atomic.Pointer[relayPath] // where relayed packets come from
	stopWatch      func()
	prepunch       *time.Timer
}

func (n *Node) listen(ctx context.Context, kp key.KeyPair, opts *ListenOptions) (*Listener, error) {
	if n.sock == nil {
		return nil, ErrNoStreams
	}
	l := &Listener{n: n, kp: kp, target: Hash(kp.Public[:]), accept: make(chan *Conn, 64), connects: make(map[string]*slot),
		refused: make(map[string]refusal), limiter: rpc.NewRateLimiter(handshakeRate, handshakeBurst, maxHandshakeSlots),
		probes: make(map[string]chan struct{}), sibling: make(chan struct{}, 1)}
	if opts != nil {
		l.opts = *opts
	}
	l.signer = l.opts.Signer
	if l.signer == nil {
		l.signer = KeySigner(kp)
	}
	if l.opts.Handshakes != nil {
		l.raw = make(chan *RawConn, cap(l.accept))
	}
	l.ctx, l.cancel = context.WithCancel(n.ctx)
	c := &n.conns
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		l.cancel()
		return nil, ErrClosed
	case c.servers[l.target] != nil:
		c.mu.Unlock()
		l.cancel()
		return nil, ErrKeyPairAlreadyUsed
	}
	c.servers[l.target] = l
	c.mu.Unlock()
	l.setRecord()

	// The first announce completes before Listen returns, as hyperdht's
	// listen() awaits it: a client that looks us up afterwards finds us.
	if err := l.announce(ctx); err != nil {
		l.closeNow()
		return nil, err
	}
	l.wg.Add(1)
	go l.background()
	return l, nil
}

// setRecord keeps our own router entry current: FIND_PEER answered by this
// node (when persistent) returns our record.
func (l *Listener) setRecord() {
	l.mu.Lock()
	p := wire.Peer{PublicKey: l.kp.Public, RelayAddresses: slices.Clone(l.relayAddrs)}
	l.mu.Unlock()
	l.n.store.RetainForward(l.target, wire.Forward{Record: p.Append(nil)}, time.Now())
}

// announce runs one announcer update: FIND_PEER towards our target, then
// ANNOUNCE to the three closest nodes that answered with a token. Nodes
// dropped since the previous update get UNANNOUNCE.
func (l *Listener) announce(ctx context.Context) error {
	n := l.n
	q := n.rpc.Query(ctx, rpc.ID(l.target), uint64(wire.CmdFindPeer), nil, nil)
	if err := drain(ctx, q); err != nil && ctx.Err() != nil {
		return err
	}
	var relays []wire.RelayInfo
	var addrs []netip.AddrPort
	if ra := n.remoteAddress(); ra.IsValid() {
		addrs = append(addrs, ra)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var committed []netip.AddrPort
	var signErr error // the last signing failure, reported when nothing was stored
	picked := 0
	for _, r := range q.Closest() {
		if picked == announceRelays {
			break
		}
		if r.Token == nil || r.FromID == nil {
			continue
		}
		picked++
		wg.Add(1)
		go func() {
			defer wg.Done()
			ann := &wire.Announce{Peer: &wire.Peer{PublicKey: l.kp.Public}}
			sig, err := l.signer.SignRecord(ctx, wire.NSAnnounce, l.target, [32]byte(*r.FromID), *r.Token, ann.Peer)
			if err != nil {
				mu.Lock()
				signErr = err
				mu.Unlock()
				return
			}
			ann.Signature = &sig
			if err := n.commitRequest(ctx, r, wire.CmdAnnounce, l.target, ann.Append(nil)); err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if len(addrs) < 3 {
				addrs = append(addrs, r.From)
			}
			relays = append(relays, wire.RelayInfo{RelayAddress: r.From, PeerAddress: r.To})
			committed = append(committed, r.From)
		}()
	}
	wg.Wait()
	if len(committed) == 0 && signErr != nil {
		// A listener whose key cannot sign its announce (a non-custodial
		// signer that fails or lies) must not hold the key on this node.
		return fmt.Errorf("%w: %w", ErrAnnounceNotSigned, signErr)
	}
	l.mu.Lock()
	prev := l.announced
	l.relays, l.relayAddrs, l.announced = relays, addrs, committed
	l.mu.Unlock()
	l.setRecord()
	for _, a := range prev {
		if !slices.Contains(committed, a) {
			l.unannounceAt(ctx, a)
		}
	}
	return nil
}

// unannounceAt removes our announce from one node: FIND_PEER for a fresh
// token, then a signed UNANNOUNCE.
func (l *Listener) unannounceAt(ctx context.Context, to netip.AddrPort) {
	n := l.n
	t := rpc.ID(l.target)
	r, err := n.rpc.Request(ctx, to, rpc.RequestOptions{Command: uint64(wire.CmdFindPeer), Target: &t})
	if err != nil || r.Token == nil || r.FromID == nil || r.Value == nil {
		return
	}
	ann := &wire.Announce{Peer: &wire.Peer{PublicKey: l.kp.Public}}
	sig, err := l.signer.SignRecord(ctx, wire.NSUnannounce, l.target, [32]byte(*r.FromID), *r.Token, ann.Peer)
	if err != nil {
		return
	}
	ann.Signature = &sig
	_ = n.commitRequest(ctx, r, wire.CmdUnannounce, l.target, ann.Append(nil))
}

// background checks the relays every 3 s and re-announces after about
// five minutes, or at once when fewer than min(#relays, 3) answer. The
// check is a FIND_PEER (hyperdht's announcer pings): it answers as a ping
// does and also says whether the node still holds a record for our key.
// One that does not was told to drop it: most likely by another process
// serving the same key that unannounced on exit, which would leave us
// unreachable until the next re-announce. So we re-announce at once.
//
// Another live process may hold the key too (keytunnel expose --replace):
// then the nodes route new clients to whichever announced last, and a
// periodic re-announce would take the key back from it every five minutes.
// So before re-announcing (except when our record is gone), and for a
// minute after a handshake from our own key (that process probing before
// it announces), we probe who answers for the key at our relays. While
// another process does, we stay quiet (ListenOptions.OnReplaced) and keep
// serving what reaches us.
func (l *Listener) background() {
	defer l.wg.Done()
	var watchUntil time.Time
	replaced := false
	setReplaced := func(v bool) {
		if v == replaced {
			return
		}
		replaced = v
		l.n.log.Debug("dht: listener replaced by another process", "key", l.kp.Public, "replaced", v)
		if l.opts.OnReplaced != nil {
			l.opts.OnReplaced(v)
		}
	}
	timer := time.NewTimer(relayPingInterval)
	defer timer.Stop()
	for {
		recordGone := false
		for i := 0; i < relayPingRounds; i++ {
			timer.Reset(relayPingInterval)
			select {
			case <-l.ctx.Done():
				return
			case <-l.sibling:
				if l.canProbe() {
					watchUntil = time.Now().Add(siblingWatch)
				}
				select {
				case <-timer.C:
				case <-l.ctx.Done():
					return
				}
			case <-timer.C:
			}
			answered, gone := l.checkRelays()
			if gone > 0 {
				recordGone = true
				break
			}
			l.mu.Lock()
			n := len(l.announced)
			l.mu.Unlock()
			// Relays lost: announce afresh, unless another process
			// holds the key (its own announce keeps the key reachable,
			// and our refresh below would probe every round).
			if !replaced && answered < min(n, announceRelays) {
				break
			}
			if !watchUntil.IsZero() && time.Now().Before(watchUntil) {
				if l.probe() == HolderOther {
					setReplaced(true)
					watchUntil = time.Time{}
				}
			}
		}
		if l.ctx.Err() != nil {
			return
		}
		if !recordGone && l.canProbe() && l.probe() == HolderOther {
			setReplaced(true)
			continue
		}
		if err := l.announce(l.ctx); err == nil {
			setReplaced(false)
		}
	}
}

// checkRelays asks each node holding our announce for our record: how
// many answered, and how many of those hold no record for our key.
func (l *Listener) checkRelays() (answered, gone int) {
	now := time.Now()
	l.mu.Lock()
	relays := slices.Clone(l.announced)
	l.limiter.Sweep(now)
	for k, r := range l.refused {
		if now.Sub(r.at) >= handshakeClearWait {
			delete(l.refused, k)
		}
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	t := rpc.ID(l.target)
	for _, a := range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := l.n.rpc.Request(l.ctx, a, rpc.RequestOptions{Command: uint64(wire.CmdFindPeer), Target: &t})
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			answered++
			if r.Value == nil {
				gone++
			}
		}()
	}
	wg.Wait()
	return answered, gone
}

// canProbe: a probe needs our secret key (a listener whose handshakes and
// signatures run elsewhere has none).
func (l *Listener) canProbe() bool { return len(l.kp.Private) > 0 }

// probe asks our relays who answers for our key (HolderNone on errors).
// When none of them routes to a live process (gone, or no longer holding
// any record), a lookup checks the rest of the DHT before we conclude
// that nobody else serves the key.
func (l *Listener) probe() Holder {
	l.mu.Lock()
	via := slices.Clone(l.announced)
	l.mu.Unlock()
	h := HolderNone
	if len(via) > 0 {
		h, _ = l.n.Probe(l.ctx, l.kp, via)
	}
	if h == HolderNone && l.ctx.Err() == nil {
		h, _ = l.n.Probe(l.ctx, l.kp, nil)
	}
	return h
}

// expectProbe registers msg1 as our own Probe's: handshake then closes
// seen instead of treating it as a client. The returned func unregisters.
func (l *Listener) expectProbe(msg1 []byte, seen chan struct{}) func() {
	k := string(msg1)
	l.mu.Lock()
	l.probes[k] = seen
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.probes, k)
		l.mu.Unlock()
	}
}

// takeProbe reports whether msg1 is one of our own probes (and tells it).
func (l *Listener) takeProbe(msg1 []byte) bool {
	l.mu.Lock()
	ch, ok := l.probes[string(msg1)]
	delete(l.probes, string(msg1))
	l.mu.Unlock()
	if ok {
		close(ch)
	}
	return ok
}

// Accept waits for the next connection: a *Conn, or a *RawConn when
// ListenOptions.Handshakes runs the handshakes.
func (l *Listener) Accept() (net.Conn, error) {
	if l.raw != nil {
		return l.AcceptRaw(context.Background())
	}
	return l.AcceptConn(context.Background())
}

// AcceptRaw waits for the next connection of a Listener whose handshakes
// run elsewhere (ListenOptions.Handshakes) or for ctx.
func (l *Listener) AcceptRaw(ctx context.Context) (*RawConn, error) {
	if l.raw == nil {
		return nil, ErrNotRaw
	}
	return acceptFrom(ctx, l, l.raw)
}

func acceptFrom[T any](ctx context.Context, l *Listener, ch <-chan T) (T, error) {
	var zero T
	select {
	case c := <-ch:
		return c, nil
	case <-l.ctx.Done():
		return zero, ErrListenerClosed
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// AcceptConn waits for the next connection (its secret-stream headers
// already exchanged) or for ctx.
func (l *Listener) AcceptConn(ctx context.Context) (*Conn, error) {
	if l.raw != nil {
		return nil, ErrRaw
	}
	return acceptFrom(ctx, l, l.accept)
}

// Close unannounces and stops accepting; established connections stay.
// It is idempotent and waits for the listener's goroutines.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.shutdown()
		// Unannounce with a fresh context: the listener's own is done.
		ctx, cancel := context.WithTimeout(l.n.ctx, 5*time.Second)
		defer cancel()
		l.mu.Lock()
		relays := l.announced
		l.announced = nil
		l.mu.Unlock()
		var wg sync.WaitGroup
		for _, a := range relays {
			wg.Add(1)
			go func() { defer wg.Done(); l.unannounceAt(ctx, a) }()
		}
		wg.Wait()
	})
	return nil
}

// closeNow closes without unannouncing (the node is going away).
func (l *Listener) closeNow() { l.closeOnce.Do(l.shutdown) }

// spawn runs f in a goroutine that Close waits for, or reports false when
// the listener is shutting down. Handshakes arrive on the DHT's goroutine
// at any time, and a WaitGroup's Add must not race its Wait: shutdown sets
// closing under l.mu before it waits, so nothing is added after.
func (l *Listener) spawn(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
	return true
}

func (l *Listener) shutdown() {
	l.cancel()
	c := &l.n.conns
	c.mu.Lock()
	if c.servers[l.target] == l {
		delete(c.servers, l.target)
	}
	c.mu.Unlock()
	l.n.store.DeleteForward(l.target, time.Now())
	l.mu.Lock()
	l.closing = true
	slots := slices.Clone(l.slots)
	l.mu.Unlock()
	for _, s := range slots {
		if s != nil {
			l.abortSlot(s, false)
		}
	}
	l.wg.Wait()
	// Connections accepted but never taken are closed.
	for {
		select {
		case c := <-l.accept:
			c.Close()
		case c := <-l.raw:
			c.Close()
		default:
			return
		}
	}
}

// Addr is the key's address (network "hyperdht", the hex public key).
func (l *Listener) Addr() net.Addr { return keyAddr(l.kp.Public) }

// PublicKey is the key the listener serves.
func (l *Listener) PublicKey() key.PublicKey { return l.kp.Public }

type keyAddr key.PublicKey

func (keyAddr) Network() string  { return "hyperdht" }
func (a keyAddr) String() string { return key.PublicKey(a).String() }

// onHandshake answers a client's first Noise message with the second, or
// refuses (ok false: silence). A repeated msg1 (the client trying several
// relays) gets the same answer, as in the reference.
func (l *Listener) onHandshake(msg1 []byte, peerAddress netip.AddrPort, r *rpc.Request) ([]byte, bool) {
	if l.ctx.Err() != nil {
		return nil, false
	}
	k := string(msg1)
	client := peerAddress
	if !client.IsValid() {
		client = r.From
	}
	now := time.Now()
	l.mu.Lock()
	s := l.connects[k]
	fresh := s == nil
	if fresh {
		if ref, ok := l.refused[k]; ok && now.Sub(ref.at) < handshakeClearWait {
			l.mu.Unlock()
			return ref.msg2, true
		}
		// Keyed by address even on loopback (rpc.Source keeps loopback
		// ports apart, for local DHT networks): handshakes are what a
		// flood makes expensive, and a local sender is one sender too.
		if !l.limiter.Allow(now, netip.AddrPortFrom(client.Addr(), 0)) {
			l.mu.Unlock()
			l.n.stats.handshake(HandshakeRateLimited)
			return nil, false
		}
		id := slices.Index(l.slots, nil)
		if id < 0 {
			if len(l.slots) >= maxHandshakeSlots {
				l.mu.Unlock()
				l.n.stats.handshake(HandshakeSlotsFull)
				return nil, false
			}
			id = len(l.slots)
			l.slots = append(l.slots, nil)
		}
		s = &slot{id: id, key: k, ready: make(chan struct{}), decided: make(chan struct{}), direct: make(chan struct{})}
		l.slots[id] = s
		l.connects[k] = s
	}
	l.mu.Unlock()
	if fresh {
		l.handshake(s, bytes.Clone(msg1), peerAddress, r)
		close(s.ready)
	}
	select {
	case <-s.ready:
	case <-l.ctx.Done():
		return nil, false
	}
	return s.msg2, s.msg2 != nil
}

func (l *Listener) handshake(s *slot, msg1 []byte, peerAddress netip.AddrPort, r *rpc.Request) {
	n := l.n
	direct := !peerAddress.IsValid()
	client := peerAddress
	if direct {
		client = r.From
	}
	var hs Handshaker
	var err error
	if l.opts.Handshakes != nil {
		hs = l.opts.Handshakes()
	} else if hs, err = newLocalHandshake(l.kp, nil); err != nil {
		n.stats.handshake(HandshakeError)
		l.clearLater(s)
		return
	}
	s.mu.Lock()
	s.hs = hs
	s.mu.Unlock()
	pt, err := hs.ReadMessage(l.ctx, msg1)
	if err != nil {
		n.stats.handshake(HandshakeInvalid)
		l.clearLater(s)
		return
	}
	remote, err := wire.DecodeNoisePayload(pt)
	if err != nil {
		n.stats.handshake(HandshakeInvalid)
		l.clearLater(s)
		return
	}
	// A denied client gets an ABORTED answer at once (Node clients report
	// SERVER_ERROR) instead of the reference's silence, which leaves the
	// client guessing for 8 s whether anyone is there. The key it dialled
	// is the server's identity already, so nothing is revealed.
	// Our own probe is answered with a refusal: it learnt what it wanted
	// (that we hold the key), and a refusal costs no slot. A handshake
	// from our own key otherwise comes from another process holding our
	// secret key, probing before it announces; the firewall never refuses
	// it (it could serve the key itself), and we watch whether it takes
	// the key over.
	own := l.takeProbe(msg1)
	sibling := !own && hs.RemotePublicKey() == l.kp.Public
	if sibling {
		select {
		case l.sibling <- struct{}{}:
		default:
		}
	}
	denied := own || (!sibling && l.opts.Firewall != nil && l.opts.Firewall(hs.RemotePublicKey(), client))
	if denied {
		n.log.Debug("dht: connection denied by firewall", "remote", hs.RemotePublicKey(), "from", client)
	}
	code, outcome := wire.ErrorNone, HandshakeAccepted
	switch {
	case denied:
		code, outcome = wire.ErrorAborted, HandshakeFirewall
	case remote.Version != 1:
		code, outcome = wire.ErrorVersionMismatch, HandshakeVersionMismatch
	case remote.UDX == nil:
		code, outcome = wire.ErrorAborted, HandshakeInvalid
	}
	ours := n.remoteAddress()
	var addrs []netip.AddrPort
	if ours.IsValid() {
		addrs = append(addrs, ours)
	}
	// Our LAN addresses: a client behind the same NAT connects there.
	addrs = append(addrs, n.localAddresses()...)
	if code == wire.ErrorNone {
		s.remoteID = uint32(remote.UDX.ID)
		st, err := newStream(n.sock.UDX(), &udx.StreamOptions{
			RemoteID: s.remoteID,
			Firewall: func(_ *udx.Stream, sock *udx.Socket, from netip.AddrPort) udx.FirewallVerdict {
				if s.relayFrom.Load().is(sock, from) {
					// Relayed: wait for the pairing's stream id.
					return udx.FirewallHold
				}
				if link := s.link.Load(); link != nil {
					// Relayed, and the client found a direct path:
					// follow it (server.js onsocket, connected stream).
					s.upgradeOnce.Do(func() {
						l.spawn(func() { l.upgrade(s, link, sock, from) })
					})
					return udx.FirewallAccept
				}
				if s.roam.Load() {
					return udx.FirewallRoam
				}
				select {
				case <-s.decided:
					// Connected already, or about to be: a second path
					// is only accepted.
					return udx.FirewallConnect
				default:
				}
				// The client's first packet tells us its path.
				go l.onsocket(s, sock, from, true)
				return udx.FirewallConnect
			},
		})
		if err != nil {
			n.stats.handshake(HandshakeError)
			l.clearLater(s)
			return
		}
		// abortSlot (Close) may have given up on the slot meanwhile; it
		// reads the stream under s.mu after deciding, so either it sees
		// this stream and destroys it, or we see its decision here.
		s.mu.Lock()
		select {
		case <-s.decided:
			s.mu.Unlock()
			st.Destroy()
			return
		default:
		}
		s.stream = st
		s.mu.Unlock()
	}
	l.mu.Lock()
	relays, relayAddrs := slices.Clone(l.relays), slices.Clone(l.relayAddrs)
	l.mu.Unlock()
	out := wire.NoisePayload{Version: 1, Error: code, Firewall: wire.FirewallUnknown,
		Addresses4: addrs, UDX: &wire.UDXInfo{Version: 1, ReusableSocket: l.opts.ReusableSocket}, SecretStream: &wire.SecretStreamInfo{Version: 1}}
	if ours.IsValid() {
		out.Firewall = wire.FirewallOpen
	} else {
		out.Holepunch = &wire.HolepunchInfo{ID: uint64(s.id), Relays: relays}
	}
	if s.stream != nil {
		out.UDX.ID = uint64(s.stream.ID())
	}
	if len(relayAddrs) > 0 {
		out.RelayAddresses = relayAddrs
	}
	var relayPK key.PublicKey
	var relayToken [32]byte
	if l.opts.RelayThrough != nil && code == wire.ErrorNone {
		if pk := l.opts.RelayThrough(); !pk.IsZero() {
			relayPK, relayToken = pk, random32()
			out.RelayThrough = &wire.RelayThroughInfo{Version: 1, PublicKey: pk, Token: relayToken}
		}
	}
	msg2, err := hs.WriteMessage(l.ctx, out.Append(nil))
	if err != nil {
		n.stats.handshake(HandshakeError)
		l.abortSlot(s, true)
		return
	}
	res, err := hs.Result()
	if err != nil {
		n.stats.handshake(HandshakeError)
		l.abortSlot(s, true)
		return
	}
	n.stats.handshake(outcome)
	s.msg2, s.res = msg2, res
	s.answered.Store(time.Now().UnixNano())
	if code != wire.ErrorNone {
		// A refusal frees its slot at once (a flood of refused clients
		// must not fill the table for the allowed ones); its answer is
		// remembered for repeats of the same msg1 (a client trying
		// several relays), which get it without new work.
		l.rememberRefusal(s.key, msg2)
		l.abortSlot(s, false)
		return
	}
	if remote.Firewall == wire.FirewallOpen || direct {
		sock, _ := n.socket()
		if direct {
			// The client reached one of our sockets itself (a reused
			// route may be our client socket's mapping): answer there.
			sock = n.sock
			if r.Socket() == rpc.SocketClient && n.csock != nil {
				sock = n.csock
			}
		}
		go l.onsocket(s, sock, client, false)
		return
	}
	// Either side asked for a blind relay: pair with it while punching;
	// the server's relay wins when both asked (server.js).
	isInitiator := !relayPK.IsZero()
	if !isInitiator && remote.RelayThrough != nil {
		relayPK, relayToken = remote.RelayThrough.PublicKey, remote.RelayThrough.Token
	}
	if !relayPK.IsZero() {
		s.mu.Lock()
		s.relayPending = true
		s.mu.Unlock()
		l.spawn(func() { l.relaySlot(s, relayPK, isInitiator, relayToken) })
	}
	s.secure = wire.NewSecurePayload(res.HolepunchSecret, random32())
	s.mu.Lock()
	s.prepunch = time.AfterFunc(handshakeInitialWait, func() { l.abortSlot(s, true) })
	if !ours.IsValid() {
		// We punch: echo the client's punches so its side connects.
		s.stopWatch = n.watchPunches(&punchWatch{fn: func(sock *udx.Socket, from netip.AddrPort) {
			if l.ownsPunch(s, from) {
				_ = n.ttlOf(sock).SendTTL(holepunch.Punch, from, holepunch.DefaultTTL)
			}
		}})
	}
	s.mu.Unlock()
}

func (s *slot) handshaker() Handshaker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hs
}

// ownsPunch says whether a 1-byte datagram from `from` is plausibly this
// slot's client (it comes from a host the client reported).
func (l *Listener) ownsPunch(s *slot, from netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.remoteAddrs {
		if r.Addr.Addr() == from.Addr() {
			return true
		}
	}
	return len(s.remoteAddrs) == 0
}

// onsocket commits the slot to a path: the stream talks to the client at
// from, the secret stream starts, and the connection is accepted once its
// headers are exchanged.
func (l *Listener) onsocket(s *slot, sock *udx.Socket, from netip.AddrPort, connected bool) {
	l.onsocketTo(s, sock, s.remoteID, from, connected, nil)
}

// relaySlot pairs the slot's stream through a blind relay and, unless a
// direct path won meanwhile, connects it there.
func (l *Listener) relaySlot(s *slot, relayPK key.PublicKey, isInitiator bool, token [32]byte) {
	link, err := l.n.pairThroughRelay(l.ctx, relayPK, isInitiator, token, s.stream, func(sock *udx.Socket, addr netip.AddrPort) {
		s.relayFrom.Store(&relayPath{sock: sock, addr: addr})
	})
	s.mu.Lock()
	s.relayPending = false
	gaveUp := s.directGaveUp
	s.mu.Unlock()
	if err != nil {
		l.n.log.Debug("dht: relay pairing failed", "relay", relayPK, "err", err, "direct_gave_up", gaveUp)
		// A failed pairing ends the connection only when the direct
		// attempt has given up already (server.js onabort destroys the
		// raw stream only when hs.aborted). Otherwise the client's first
		// packet or the punch may still come, and the prepunch timer
		// ends the slot if neither does: a relay that is unknown (or
		// slow to fail) must not cut a direct path that works, which it
		// did whenever the pairing failed before the client's first
		// packet arrived.
		if gaveUp {
			select {
			case <-s.decided:
			default:
				l.abortSlot(s, true)
			}
		}
		return
	}
	if !l.onsocketTo(s, link.sock, link.remoteID, link.addr, false, link) {
		link.Close() // a direct path won
	}
}

// onsocketTo commits the slot to a path (see onsocket); remoteID is the
// stream id packets go to (the client's, or the relay's). It reports
// whether this call decided.
func (l *Listener) onsocketTo(s *slot, sock *udx.Socket, remoteID uint32, from netip.AddrPort, connected bool, link *relayLink) bool {
	decided := false
	s.once.Do(func() {
		decided = true
		close(s.decided)
		if link == nil {
			l.goDirect(s, sock)
		}
		if !connected {
			// The client's first packet may have connected the stream
			// (firewall) while this call was on its way: that is fine.
			if err := s.stream.Connect(sock, remoteID, from); err != nil && !errors.Is(err, udx.ErrAlreadyConnected) {
				l.stopPunching(s, nil)
				s.stream.Destroy()
				return
			}
		}
		if link == nil {
			s.roam.Store(true)
			_ = s.stream.SetTimeout(StreamTimeout)
			// A round-trip hint for the stream, so that our first
			// packets, lost, are probed again within two of it instead
			// of after the 1 s initial RTO. The client sends its first
			// packet once our answer reaches it (through the node):
			// when that packet connected the stream, it came about a
			// round trip after the answer left; otherwise we connect
			// now, as the answer leaves, and the stream measures the
			// same span when the client's packet arrives.
			if connected {
				if at := s.answered.Load(); at != 0 {
					_ = s.stream.SetRTTHint(time.Since(time.Unix(0, at)))
				}
			} else {
				_ = s.stream.HintRTTFromPeer()
			}
		}
		if link != nil {
			l.n.keepRelay(link, s.stream)
			s.link.Store(link)
			// The punch goes on; the slot stays until the stream ends or
			// moves to a direct path (server.js clears it when the raw
			// stream closes).
			l.spawn(func() {
				select {
				case <-s.stream.Done():
					l.stopPunching(s, nil)
				case <-s.direct:
				case <-l.ctx.Done():
				}
				l.clearLater(s)
			})
		}
		if s.res.Keys == nil {
			// The keys are the Handshaker's: its owner runs secret-stream.
			select {
			case l.raw <- newRawConn(s.stream, s.handshaker(), s.res.RemotePublicKey):
			case <-l.ctx.Done():
				s.stream.Destroy()
			}
			return
		}
		conn, err := secretstream.New(s.stream, secretstream.Options{IsInitiator: false, Handshake: s.res.Keys, KeepAlive: connectionKeepAlive, SendHeader: true})
		if err != nil {
			s.stream.Destroy()
			return
		}
		opened := l.spawn(func() {
			ctx, cancel := context.WithTimeout(l.ctx, openTimeout)
			defer cancel()
			if err := conn.Handshake(ctx); err != nil {
				l.n.log.Debug("dht: incoming connection failed to open", "err", err)
				conn.Close()
				return
			}
			if !connected {
				// We connected first (the client is reachable, or came to
				// us directly): the connection is the client's only once
				// its side opens too. A half-dial (another process's
				// Probe of our key, or a client that gave up) never
				// sends a packet, and must not reach Accept as a silent
				// peer: an Exposer would take it for a raw client and
				// connect it to its target.
				select {
				case <-s.stream.Heard():
				case <-ctx.Done():
					l.n.log.Debug("dht: the client never opened its side", "remote", s.res.RemotePublicKey)
					conn.Close()
					return
				}
			}
			select {
			case l.accept <- conn:
			case <-l.ctx.Done():
				conn.Close()
			}
		})
		if !opened {
			conn.Close()
		}
	})
	return decided
}

// goDirect marks the slot as on a direct path through sock: punching
// stops (a pool keeps sock while the stream lives) and the slot is freed
// later.
func (l *Listener) goDirect(s *slot, sock *udx.Socket) {
	s.directOnce.Do(func() { close(s.direct) })
	l.stopPunching(s, sock)
	l.clearLater(s)
}

// stopPunching ends the slot's punching: prepunch deadline, puncher,
// punch watcher and pool (keeping keep, when it is one of the pool's
// sockets, until the stream ends).
func (l *Listener) stopPunching(s *slot, keep *udx.Socket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pool != nil {
		if keep != nil {
			s.pool.close(keep, s.stream.Done())
		} else {
			s.pool.close(nil, nil)
		}
		s.pool = nil
	}
	if s.prepunch != nil {
		s.prepunch.Stop()
	}
	if s.puncher != nil {
		go s.puncher.Close()
		s.puncher = nil
	}
	if s.stopWatch != nil {
		s.stopWatch()
		s.stopWatch = nil
	}
}

// upgrade moves a relayed slot's stream to the direct path the client
// reached us on.
func (l *Listener) upgrade(s *slot, link *relayLink, sock *udx.Socket, from netip.AddrPort) {
	l.goDirect(s, sock)
	l.n.upgradeFromRelay(s.stream, link, sock, s.remoteID, from)
}

// abortSlot gives up on a slot's connection (prepunch timeout, a refused
// payload, Close) and frees its id later.
func (l *Listener) abortSlot(s *slot, later bool) {
	s.mu.Lock()
	relaying := s.relayPending && l.ctx.Err() == nil
	if relaying {
		s.directGaveUp = true
	}
	s.mu.Unlock()
	aborted := false
	if !relaying {
		// While a relay pairing runs, a failed punch leaves the stream to
		// the relay (server.js keeps it when it has a relay token).
		s.once.Do(func() { close(s.decided); aborted = true })
	}
	l.stopPunching(s, nil)
	s.mu.Lock()
	st := s.stream
	s.mu.Unlock()
	if aborted && st != nil {
		st.Destroy()
	}
	if later {
		l.clearLater(s)
	} else {
		l.clear(s)
	}
}

// refusal is the answer to a refused handshake and when it was given.
type refusal struct {
	msg2 []byte
	at   time.Time
}

func (l *Listener) rememberRefusal(k string, msg2 []byte) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.refused) >= maxRefusalMemory {
		for k, r := range l.refused {
			if now.Sub(r.at) >= handshakeClearWait {
				delete(l.refused, k)
			}
		}
		if len(l.refused) >= maxRefusalMemory {
			// All recent: a flood. Forgetting costs repeats new work,
			// which the per-source limit bounds.
			clear(l.refused)
		}
	}
	l.refused[k] = refusal{msg2: msg2, at: now}
}

func (l *Listener) clearLater(s *slot) {
	s.clearOnce.Do(func() {
		time.AfterFunc(handshakeClearWait, func() { l.clear(s) })
	})
}

func (l *Listener) clear(s *slot) {
	s.mu.Lock()
	if hs := s.hs; hs != nil {
		s.hs = nil
		defer closeHandshaker(hs)
	}
	s.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.id < len(l.slots) && l.slots[s.id] == s {
		l.slots[s.id] = nil
		for len(l.slots) > 0 && l.slots[len(l.slots)-1] == nil {
			l.slots = l.slots[:len(l.slots)-1]
		}
	}
	if l.connects[s.key] == s {
		delete(l.connects, s.key)
	}
}

// onHolepunch answers one PEER_HOLEPUNCH round from the client (relayed to
// us). ok false means silence.
func (l *Listener) onHolepunch(id uint64, payload []byte, peerAddress netip.AddrPort, r *rpc.Request) ([]byte, bool) {
	n := l.n
	l.mu.Lock()
	var s *slot
	if id < uint64(len(l.slots)) {
		s = l.slots[id]
	}
	isServerRelay := slices.ContainsFunc(l.relays, func(ri wire.RelayInfo) bool { return sameAddr(ri.RelayAddress, r.From) })
	l.mu.Unlock()
	if s == nil || l.ctx.Err() != nil {
		return nil, false
	}
	select {
	case <-s.ready:
	default:
		return nil, false
	}
	if s.secure == nil {
		return nil, false
	}
	p, err := s.secure.Decrypt(payload)
	if err != nil {
		return nil, false
	}
	abort := func(code wire.ErrorCode) ([]byte, bool) {
		l.abortSlot(s, true)
		b, err := s.secure.Encrypt(&wire.HolepunchPayload{Error: code, Round: p.Round}, rand.Reader)
		return b, err == nil
	}
	if p.Error != wire.ErrorNone {
		return abort(wire.ErrorAborted)
	}
	token := s.secure.Token(peerAddress.Addr().String())
	echoed := isServerRelay && p.RemoteToken != nil && *p.RemoteToken == token

	s.mu.Lock()
	if p.Round >= s.round {
		s.round = p.Round
		s.remoteFirewall = p.Firewall
		s.remoteAddrs = updateRemotes(p.Addresses, s.remoteAddrs, echoed, peerAddress.Addr())
		s.remotePunching = p.Punching
	}
	remoteFw, remotePunching := s.remoteFirewall, s.remotePunching
	s.mu.Unlock()

	fw, addrs := n.waitNAT(l.ctx.Done(), 2*time.Second)
	if fw == wire.FirewallUnknown {
		return abort(wire.ErrorAborted)
	}
	// Fast mode: the client opened a session to one of our addresses, so
	// one punch now may already get through.
	if (fw == wire.FirewallConsistent || fw == wire.FirewallOpen) && p.RemoteAddress.IsValid() &&
		slices.ContainsFunc(addrs, func(a netip.AddrPort) bool { return sameAddr(a, p.RemoteAddress) }) {
		_, ttl := n.socket()
		_ = ttl.SendTTL(holepunch.Punch, peerAddress, holepunch.DefaultTTL)
	}
	if remotePunching {
		s.mu.Lock()
		started := s.punching
		remotes := slices.Clone(s.remoteAddrs)
		s.mu.Unlock()
		if !started {
			verified := slices.ContainsFunc(remotes, func(r holepunch.Remote) bool { return r.Verified })
			strategy, err := holepunch.Choose(punchFirewall(fw), punchFirewall(remoteFw), verified)
			if err != nil {
				return abort(wire.ErrorAborted)
			}
			random := strategy == holepunch.StrategyRandomProbes || strategy == holepunch.StrategyBirthday
			if random && !n.acquireRandomPunch(time.Now()) {
				return abort(wire.ErrorTryLater)
			}
			pctx, pcancel := context.WithCancel(l.ctx)
			_, ttl := n.socket()
			cfg := holepunch.Config{Strategy: strategy, Remote: remotes, Socket: ttl}
			var pool *punchPool
			if strategy == holepunch.StrategyBirthday {
				// Echo punches from whichever pool socket they reach; the
				// client then connects to that mapping.
				pool, _ = n.newPunchPool(func(ps *udx.Socket, from netip.AddrPort) {
					if l.ownsPunch(s, from) {
						_, _ = ps.WriteTo(holepunch.Punch, net.UDPAddrFromAddrPort(from))
					}
				}).(*punchPool)
				if pool != nil {
					cfg.Pool = pool
				}
			}
			p := holepunch.Start(pctx, cfg)
			n.log.Debug("dht: server punching", "strategy", strategy, "remotes", remotes)
			n.stats.punchAttempts.Add(1)
			s.mu.Lock()
			s.punching, s.puncher, s.pool = true, p, pool
			s.mu.Unlock()
			// Punching replaces the prepunch deadline (as in server.js);
			// the slot now lives until a path is found or the punch
			// budget is spent.
			s.mu.Lock()
			if s.prepunch != nil {
				s.prepunch.Stop()
			}
			s.mu.Unlock()
			watch := func() {
				defer pcancel()
				spent := make(chan struct{})
				go func() {
					p.Wait(pctx)
					close(spent)
				}()
				// A relayed slot keeps punching: a direct path found
				// later takes over (direct closes).
				select {
				case <-s.direct:
					n.stats.punchSuccesses.Add(1)
				case <-spent:
					// The client's first packet may still be on its way.
					t := time.NewTimer(2 * time.Second)
					select {
					case <-s.direct:
						n.stats.punchSuccesses.Add(1)
					case <-t.C:
						l.abortSlot(s, true)
					case <-pctx.Done():
					}
					t.Stop()
				case <-pctx.Done():
				}
				p.Close()
				<-spent
				if random {
					n.releaseRandomPunch(time.Now())
				}
			}
			if !l.spawn(watch) {
				// Closing: l.ctx is done, so watch only cleans up.
				watch()
			}
		}
	}
	s.mu.Lock()
	reply := wire.HolepunchPayload{Error: wire.ErrorNone, Firewall: fw, Round: s.round, Punching: s.punching,
		Addresses: addrs, RemoteToken: p.Token}
	if reply.Addresses == nil {
		reply.Addresses = []netip.AddrPort{}
	}
	s.mu.Unlock()
	select {
	case <-s.decided:
		reply.Connected = true
	default:
	}
	if isServerRelay {
		reply.Token = &token
	}
	b, err := s.secure.Encrypt(&reply, rand.Reader)
	return b, err == nil
}
