package dht

import (
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

// Client-side constants of hyperdht's connect.js.
const (
	connectParallel  = 2 // concurrent PEER_HANDSHAKEs
	findPeerRetries  = 3
	passiveWait      = 10 * time.Second // we are OPEN: the server comes to us
	lanHeadStart     = time.Second      // a LAN ping answers long before this; punching waits for it
	unknownGrace     = time.Second      // the server has not classified its NAT yet
	punchWaitTimeout = 40 * time.Second // longest strategy (1750 × 20 ms) plus slack
)

// dialer is one Dial in progress (connect.js's `c`).
type dialer struct {
	n      *Node
	kp     key.KeyPair
	remote key.PublicKey
	target [32]byte
	stream *udx.Stream

	hsMu   sync.Mutex
	hs     Handshaker
	msg1   []byte
	hsDone bool  // the server's reply was read (successfully or not)
	hsErr  error // what it said, if it refused

	// early is the path of a server packet that arrived before we knew
	// where to connect (the server reached us first). onEarly takes such
	// paths while the dial decides; onDirect, once the connection is
	// relayed, takes a direct path the server found later.
	earlyMu   sync.Mutex
	early     netip.AddrPort
	earlySock *udx.Socket
	serverID  uint32
	onEarly   func(*udx.Socket, netip.AddrPort)
	onDirect  func(*udx.Socket, netip.AddrPort)

	reusable     bool // DialOptions.ReusableSocket
	report       *DialReport
	directErr    error         // why the direct attempt failed, when it did
	theirFW      atomic.Uint64 // the server's NAT class from the punch rounds (wire.Firewall)
	relayThrough RelayThrough
	relayPK      key.PublicKey
	relayToken   [32]byte
	relayFrom    atomic.Pointer[relayPath]
	// roam is set once the stream is on a direct path for good: the
	// server's authenticated data from a new address then moves it
	// (udx.FirewallRoam; secret-stream reports what it authenticated).
	roam atomic.Bool

	// set once by the first successful handshake
	once    sync.Once
	done    chan struct{}
	connect *connectInfo
}

type connectInfo struct {
	res           HandshakeResult
	payload       wire.NoisePayload
	relayed       bool
	relayAddress  netip.AddrPort // the node the handshake went through
	serverAddress netip.AddrPort
	clientAddress netip.AddrPort
	hsRTT         time.Duration // the handshake's round trip (0: unknown)
}

// dial returns a *Conn, or a *RawConn when h (nil: a handshake with the
// key pair here) keeps the keys.
func (n *Node) dial(ctx context.Context, remote key.PublicKey, opts *DialOptions, h Handshaker) (net.Conn, error) {
	if n.sock == nil {
		return nil, ErrNoStreams
	}
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	d := &dialer{n: n, kp: n.kp, remote: remote, target: Hash(remote[:]), done: make(chan struct{})}
	if opts != nil && !opts.KeyPair.Public.IsZero() {
		d.kp = opts.KeyPair
	}
	if opts != nil {
		d.relayThrough, d.reusable, d.report = opts.RelayThrough, opts.ReusableSocket, opts.Report
	}
	if h == nil {
		var err error
		if h, err = newLocalHandshake(d.kp, &remote); err != nil {
			return nil, err
		}
	}
	d.hs = h
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()

	st, err := newStream(n.sock.UDX(), &udx.StreamOptions{Firewall: d.firewall})
	if err != nil {
		return nil, err
	}
	d.stream = st
	n.stats.dials.Add(1)
	conn, err := d.run(ctx)
	if err != nil {
		n.stats.dialFailures.Add(1)
		st.Destroy()
		if ctx.Err() != nil && n.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, err
	}
	return conn, nil
}

// firewall sees packets for our stream from a path it is not connected
// to. Before the connection: the server reaching us first. Once we know
// the server's stream id we connect right there; before that we note the
// path and hold the packets, which udx replays when we connect. On a
// relayed connection: the server moved to a direct path, and so do we.
// On a direct one: the server's address changed (its NAT lost our
// mapping), and udx follows it once secret-stream has authenticated
// data that came from there (udx.FirewallRoam). Anything else on a
// connected stream is accepted (Hold then means accept), as udx-native
// does.
func (d *dialer) firewall(_ *udx.Stream, sock *udx.Socket, from netip.AddrPort) udx.FirewallVerdict {
	if d.relayFrom.Load().is(sock, from) {
		return udx.FirewallHold // relayed: connect once the pairing answers
	}
	if d.roam.Load() {
		return udx.FirewallRoam
	}
	d.earlyMu.Lock()
	defer d.earlyMu.Unlock()
	if d.onDirect != nil {
		d.onDirect(sock, from)
		return udx.FirewallAccept
	}
	if !d.early.IsValid() {
		d.early, d.earlySock = from, sock
	}
	if d.onEarly != nil {
		d.onEarly(sock, from)
		return udx.FirewallConnect
	}
	return udx.FirewallHold
}

// run dials: the first Noise message, the handshake (through a reusable
// route, or found through the DHT), then a path to the server (direct,
// hole-punched or paired through a blind relay), then secret-stream.
func (d *dialer) run(ctx context.Context) (net.Conn, error) {
	n := d.n
	p := d.payload()
	msg1, err := d.hs.WriteMessage(ctx, p.Append(nil))
	if err != nil {
		return nil, err
	}
	d.msg1 = msg1
	d.retryRoute(ctx)
	if d.connect == nil {
		if d.spent() {
			return nil, d.hsErr
		}
		if err := d.findAndConnect(ctx); err != nil {
			return nil, err
		}
	}
	c := d.connect
	n.log.Debug("dht: dial handshake done", "remote", d.remote, "relayed", c.relayed, "via", c.relayAddress,
		"server", c.serverAddress, "firewall", c.payload.Firewall, "holepunch", c.payload.Holepunch != nil)
	d.serverID = uint32(c.payload.UDX.ID)
	if err := d.stream.SetFirewallRemoteID(d.serverID); err != nil {
		return nil, err
	}
	// The handshake went to the server and back through a DHT node: by
	// the triangle inequality, about the stream's round trip or more.
	// With it, a lost first packet is probed again after two of it, not
	// after the 1 s initial RTO.
	if c.hsRTT > 0 {
		if err := d.stream.SetRTTHint(c.hsRTT); err != nil {
			return nil, err
		}
	}

	// Where to connect: a path the server already used, the node we
	// handshook with when it was the server itself, or a holepunch.
	path := make(chan punchPath, 1)
	onPath := func(sock *udx.Socket, a netip.AddrPort) {
		select {
		case path <- punchPath{sock: sock, from: a, connected: true}:
		default:
		}
	}
	d.earlyMu.Lock()
	if d.early.IsValid() {
		onPath(d.earlySock, d.early)
	} else {
		d.onEarly = onPath
	}
	d.earlyMu.Unlock()

	// The punch may outlive Dial (a relayed connection upgrades when it
	// succeeds later), so its context follows ctx only until then.
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	stopDial := context.AfterFunc(ctx, pcancel)
	keepPunching := false
	defer func() {
		if !keepPunching {
			pcancel()
		}
	}()
	relayCh := d.startRelay(pctx)
	directCh := d.startDirect(pctx, path)
	chosen, link, directCh, err := d.race(directCh, relayCh)
	if err != nil {
		return nil, err
	}
	if link == nil || directCh == nil {
		pcancel()
	}
	from, connected, sock := chosen.from, chosen.connected, chosen.sock
	remoteID := d.serverID
	if link != nil {
		sock, from, remoteID, connected = link.sock, link.addr, link.remoteID, false
		n.keepRelay(link, d.stream)
	}
	if !connected && !d.stream.Connected() {
		if err := d.stream.Connect(sock, remoteID, from); err != nil && !errors.Is(err, udx.ErrAlreadyConnected) {
			return nil, err
		}
	}
	d.earlyMu.Lock()
	d.onEarly = nil
	if link != nil {
		d.onDirect = d.upgrader(link)
	} else {
		d.roam.Store(true)
	}
	d.earlyMu.Unlock()
	if link == nil {
		// Not under earlyMu: the firewall takes it on the udx loop.
		_ = d.stream.SetTimeout(StreamTimeout)
	}
	if link != nil && directCh != nil && n.ctx.Err() == nil {
		// Relayed while the punch goes on: a direct path it finds later
		// takes over from the relay (connect.js keeps punching too).
		keepPunching = true
		stopDial()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer pcancel()
			select {
			case r := <-directCh:
				if r.err == nil {
					d.earlyMu.Lock()
					d.onDirect(r.p.sock, r.p.from)
					d.earlyMu.Unlock()
				}
			case <-d.stream.Done():
			case <-n.ctx.Done():
			}
		}()
	}
	if d.reusable && c.payload.UDX.ReusableSocket && link == nil {
		d.rememberRoute()
	}
	if r := d.report; r != nil {
		*r = DialReport{Path: chosen.how, Server: from, Theirs: FirewallName(c.payload.Firewall)}
		fw, _ := n.natState()
		r.Ours = FirewallName(fw)
		if c.payload.Firewall == wire.FirewallUnknown {
			r.Theirs = FirewallName(wire.Firewall(d.theirFW.Load()))
		}
		if link != nil {
			r.Path, r.Relay, r.DirectErr = PathRelay, d.relayPK, d.directErr
			if rt := c.payload.RelayThrough; rt != nil {
				r.Relay = rt.PublicKey
			}
		}
	}
	n.log.Debug("dht: dial path", "remote", d.remote, "to", from, "connected", connected)
	return d.open(ctx)
}

type relayResult struct {
	link *relayLink
	err  error
}

type directResult struct {
	p   punchPath
	err error
}

// startRelay pairs through a blind relay, in parallel with the direct
// attempts, when either side asked for one; the server's relay wins
// (connect.js). It returns nil when neither did.
func (d *dialer) startRelay(ctx context.Context) chan relayResult {
	relayPK, relayToken, isInitiator := d.relayPK, d.relayToken, true
	if rt := d.connect.payload.RelayThrough; rt != nil {
		relayPK, relayToken, isInitiator = rt.PublicKey, rt.Token, false
	}
	if relayPK.IsZero() {
		return nil
	}
	ch := make(chan relayResult, 1)
	go func() {
		link, err := d.n.pairThroughRelay(ctx, relayPK, isInitiator, relayToken, d.stream, func(sock *udx.Socket, addr netip.AddrPort) {
			d.relayFrom.Store(&relayPath{sock: sock, addr: addr})
		})
		ch <- relayResult{link, err}
	}()
	return ch
}

// startDirect finds the direct path: one the server already reached us
// on, the node we handshook with when it was the server itself, or else a
// holepunch (which runs on ctx).
func (d *dialer) startDirect(ctx context.Context, path chan punchPath) chan directResult {
	ch := make(chan directResult, 1)
	select {
	case p := <-path:
		// The server reached us before we got here: connected already
		// unless the packet was held.
		p.connected = d.stream.Connected()
		p.how = PathPeerFirst
		ch <- directResult{p: p}
	default:
		if c := d.connect; !c.relayed {
			sock, _ := d.n.socket()
			ch <- directResult{p: punchPath{sock: sock, from: c.relayAddress, how: PathDirect}}
		} else {
			go func() {
				a, err := d.holepunch(ctx, path)
				ch <- directResult{a, err}
			}()
		}
	}
	return ch
}

// race waits for the first path that works, direct or relayed. It returns
// directCh still set when the relay won before the direct attempt ended
// (the caller may keep punching), and drops a relay that pairs after a
// direct path won.
func (d *dialer) race(directCh chan directResult, relayCh chan relayResult) (chosen punchPath, link *relayLink, _ chan directResult, _ error) {
	var directErr error
	for chosen.sock == nil && link == nil {
		select {
		case r := <-directCh:
			directCh = nil
			if r.err == nil {
				chosen = r.p
				break
			}
			directErr = r.err
			d.directErr = r.err
			if relayCh == nil {
				return chosen, nil, nil, r.err
			}
			d.n.log.Debug("dht: no direct path, waiting for the relay", "remote", d.remote, "err", r.err)
		case r := <-relayCh:
			relayCh = nil
			if r.err == nil {
				link = r.link
				break
			}
			if directCh == nil {
				return chosen, nil, nil, fmt.Errorf("%w (direct: %w)", r.err, directErr)
			}
			d.n.log.Debug("dht: relay pairing failed", "remote", d.remote, "err", r.err)
		}
	}
	if relayCh != nil {
		// A direct path won: drop the relay when its pairing returns.
		go func() {
			if r := <-relayCh; r.link != nil {
				r.link.Close()
			}
		}()
	}
	return chosen, link, directCh, nil
}

// payload is our handshake payload: addresses, the udx stream, and a
// blind relay if one is configured.
func (d *dialer) payload() wire.NoisePayload {
	n := d.n
	p := wire.NoisePayload{Version: 1, Firewall: wire.FirewallUnknown,
		UDX: &wire.UDXInfo{Version: 1, ID: uint64(d.stream.ID()), ReusableSocket: d.reusable}, SecretStream: &wire.SecretStreamInfo{Version: 1}}
	if ours := n.remoteAddress(); ours.IsValid() {
		p.Firewall = wire.FirewallOpen
		p.Addresses4 = []netip.AddrPort{ours}
	}
	p.Addresses4 = append(p.Addresses4, n.localAddresses()...)
	if d.relayThrough != nil {
		if pk := d.relayThrough(); !pk.IsZero() {
			d.relayPK, d.relayToken = pk, random32()
			p.RelayThrough = &wire.RelayThroughInfo{Version: 1, PublicKey: pk, Token: d.relayToken}
		}
	}
	return p
}

// retryRoute tries a route both sides allowed to reuse first: one direct
// PEER_HANDSHAKE, no lookup, no punch (connect.js retryRoute). A route
// that fails is forgotten.
func (d *dialer) retryRoute(ctx context.Context) {
	n := d.n
	if !d.reusable {
		return
	}
	rt, ok := n.route(d.remote)
	if !ok {
		return
	}
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	sock := rpc.SocketServer
	if rt.sock == n.csock {
		sock = rpc.SocketClient
	}
	if err := d.connectThroughSock(rctx, rt.addr, sock, rt.rtt); err != nil && !d.spent() {
		n.setRoute(d.remote, nil)
	}
}

// rememberRoute keeps the stream's direct path for the next Dial to this
// server (it allowed reuse), with its round trip so far.
func (d *dialer) rememberRoute() {
	if s, a := d.stream.Socket(), d.stream.RemoteAddr(); s != nil && a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			d.n.setRoute(d.remote, &route{sock: s, addr: ap, rtt: d.stream.RTT()})
		}
	}
}

// open starts secret-stream on the connected udx stream, or hands the
// stream to the Handshaker's owner when the keys are not ours.
func (d *dialer) open(ctx context.Context) (net.Conn, error) {
	c := d.connect
	if c.res.Keys == nil {
		return newRawConn(d.stream, d.hs, d.remote), nil
	}
	conn, err := secretstream.New(d.stream, secretstream.Options{IsInitiator: true, Handshake: c.res.Keys, KeepAlive: connectionKeepAlive, SendHeader: true})
	if err != nil {
		return nil, err
	}
	hctx, hcancel := context.WithTimeout(ctx, openTimeout)
	defer hcancel()
	if err := conn.Handshake(hctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// upgrader returns the onDirect of a relayed connection: the first direct
// path moves the stream off the relay (d.earlyMu held when called).
func (d *dialer) upgrader(link *relayLink) func(*udx.Socket, netip.AddrPort) {
	var once sync.Once
	return func(sock *udx.Socket, from netip.AddrPort) {
		once.Do(func() {
			n := d.n
			if n.ctx.Err() != nil {
				return
			}
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.upgradeFromRelay(d.stream, link, sock, d.serverID, from)
			}()
		})
	}
}

// findAndConnect runs FIND_PEER for the target and sends our handshake
// through every node that holds the server's record, two at a time, until
// one answers. A persistent node that is itself a relay for the target
// tries that route first.
func (d *dialer) findAndConnect(ctx context.Context) error {
	n := d.n
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Once a handshake is answered (or refused) the lookup has done its
	// job: stop it at once. Waiting in q.Next for its next reply, which
	// may be a lost one, held the dial up to dht-rpc's 1 s timeout.
	go func() {
		select {
		case <-d.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	sem := make(chan struct{}, connectParallel)
	var wg sync.WaitGroup
	attempts := 0
	var lastErr error
	var errMu sync.Mutex
	try := func(to netip.AddrPort, rtt time.Duration) {
		attempts++
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		case <-d.done:
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := d.connectThroughSock(ctx, to, rpc.SocketSame, rtt); err != nil {
				errMu.Lock()
				lastErr = err
				errMu.Unlock()
			}
		}()
	}
	tried := map[netip.AddrPort]bool{}
	if relay := n.relayOf(d.target); relay.IsValid() {
		tried[relay] = true
		try(relay, 0)
	}
	for round := 0; round < 2 && !d.handshook(); round++ {
		q := n.rpc.Query(ctx, rpc.ID(d.target), uint64(wire.CmdFindPeer), nil, &rpc.QueryOptions{Retries: findPeerRetries})
	replies:
		for {
			r, err := q.Next(ctx)
			if err != nil {
				break
			}
			select {
			case <-d.done:
				q.Close()
				break replies
			default:
			}
			if r.Value == nil || tried[r.From] {
				continue
			}
			if _, err := wire.DecodePeer(r.Value); err != nil {
				continue
			}
			tried[r.From] = true
			// The node just answered: its round trip times the
			// handshake's retries (rpc.FirstTimeoutFor).
			try(r.From, r.RoundTrip())
		}
		q.Close()
		if attempts > 0 {
			break
		}
	}
	waitDone := make(chan struct{})
	go func() { wg.Wait(); close(waitDone) }()
	select {
	case <-d.done:
		cancel()
		<-waitDone
	case <-waitDone:
	}
	select {
	case <-d.done:
		d.hsMu.Lock()
		defer d.hsMu.Unlock()
		return d.hsErr
	default:
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if attempts == 0 {
		return ErrPeerNotFound
	}
	var ce *ConnectError
	if errors.As(lastErr, &ce) && ce.Code != ErrBadHandshakeReply.Code {
		return lastErr
	}
	return ErrPeerConnectionFailed.with(lastErr)
}

// connectThrough sends our first Noise message to one node and, if the
// server answers through it first, records the handshake.
// handshook reports whether a handshake succeeded (d.connect is set, under
// hsMu, by whichever connectThrough got the reply first).
func (d *dialer) handshook() bool {
	d.hsMu.Lock()
	defer d.hsMu.Unlock()
	return d.connect != nil
}

func (d *dialer) connectThrough(ctx context.Context, to netip.AddrPort) error {
	return d.connectThroughSock(ctx, to, rpc.SocketSame, 0)
}

// connectThroughSock is connectThrough from a chosen socket (a reused
// route's); rpc.SocketSame lets dht-rpc pick.
func (d *dialer) connectThroughSock(ctx context.Context, to netip.AddrPort, sock rpc.Socket, rtt time.Duration) error {
	start := time.Now()
	// The request goes on to the server and back, which dht-rpc's fixed
	// 1 s left to a lost packet: on a lossy path a dial waited a second,
	// or three when loss came in bursts.
	rep, err := d.n.peerHandshake(ctx, d.target, d.msg1, to, sock, rpc.FirstTimeoutFor(rtt))
	d.n.log.Debug("dht: peer handshake", "via", to, "took", time.Since(start), "err", err)
	if err != nil {
		return err
	}
	d.hsMu.Lock()
	defer d.hsMu.Unlock()
	if d.connect != nil {
		return nil
	}
	if d.hsDone {
		return d.hsErr
	}
	fail := func(err error) error {
		// The Noise handshake is spent: later replies cannot be read, and
		// the server's answer stands.
		d.hsDone, d.hsErr = true, err
		d.once.Do(func() { close(d.done) })
		return err
	}
	pt, err := d.hs.ReadMessage(ctx, rep.noise)
	if err != nil {
		return ErrHandshakeInvalid.with(err)
	}
	payload, err := wire.DecodeNoisePayload(pt)
	if err != nil {
		return fail(ErrHandshakeInvalid.with(err))
	}
	switch {
	case payload.Version != 1:
		return fail(ErrServerIncompatible)
	case payload.Error == wire.ErrorAborted:
		return fail(ErrRefused)
	case payload.Error != wire.ErrorNone:
		return fail(ErrServerError.with(payload.Error))
	case payload.UDX == nil:
		return fail(ErrServerError.with(errors.New("server sent no udx info")))
	}
	res, err := d.hs.Result()
	if err != nil {
		return ErrHandshakeInvalid.with(err)
	}
	d.connect = &connectInfo{res: res, payload: payload, relayed: rep.relayed, relayAddress: to,
		serverAddress: rep.serverAddress, clientAddress: rep.clientAddress, hsRTT: rep.rtt}
	d.once.Do(func() { close(d.done) })
	return nil
}

// holepunch finds a direct path to a server we reached through a relay
// (connect.js holepunch, probeRound, roundPunch). It returns the address
// to connect to, or that the stream is already connected (the server's
// first packet arrived and the firewall connected it).
type punchPath struct {
	sock      *udx.Socket
	from      netip.AddrPort
	connected bool   // the server's first packet connected the stream
	how       string // a DialReport.Path
}

func (d *dialer) holepunch(ctx context.Context, path <-chan punchPath) (_ punchPath, err error) {
	n, c := d.n, d.connect
	pl := c.payload
	sock, _ := n.socket()
	remoteHolepunchable := pl.Holepunch != nil && len(pl.Holepunch.Relays) > 0
	relayed := !sameAddr(c.serverAddress, c.relayAddress)
	if pl.Firewall == wire.FirewallOpen || (relayed && !remoteHolepunchable) {
		for _, a := range pl.Addresses4 {
			if !isBogon(a.Addr()) {
				return punchPath{sock: sock, from: a, how: PathDirect}, nil
			}
		}
		return punchPath{sock: sock, from: c.serverAddress, how: PathDirect}, nil
	}
	if n.remoteAddress().IsValid() {
		// We said we are OPEN: the server connects to us.
		t := time.NewTimer(passiveWait)
		defer t.Stop()
		select {
		case p := <-path:
			p.how = PathPeerFirst
			return p, nil
		case <-t.C:
			return punchPath{}, ErrHolepunchAborted
		case <-ctx.Done():
			return punchPath{}, ctx.Err()
		}
	}
	// Behind the same NAT (the relay saw one public host for both of us):
	// race a PING to the server's best LAN address with the punch, which
	// a NAT without hairpinning would never let through.
	lan := make(chan punchPath, 1)
	if relayed && c.clientAddress.Addr() == c.serverAddress.Addr() {
		if cands := lanCandidates(pl.Addresses4); len(cands) > 0 {
			addr := matchAddress(n.localAddresses(), cands)
			go func() {
				lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				if _, err := n.rpc.Request(lctx, addr, rpc.RequestOptions{Internal: true, Command: rpc.CmdPing, Socket: rpc.SocketServer}); err == nil {
					lan <- punchPath{sock: n.sock, from: addr, how: PathLAN}
				} else {
					close(lan)
				}
			}()
			// The LAN gets a head start, as in connect.js which pings
			// before punching at all: a punch round in flight when the
			// LAN wins can make the server give up (two randomizing
			// NATs) and destroy the stream the LAN path just opened.
			wait := time.NewTimer(lanHeadStart)
			if !remoteHolepunchable {
				wait.Stop()
			}
			select {
			case p, ok := <-lan:
				wait.Stop()
				if ok {
					return p, nil
				}
				if !remoteHolepunchable {
					return punchPath{}, ErrHolepunchAborted.with(errors.New("the server's LAN address did not answer"))
				}
				lan = nil
			case <-wait.C:
				// A slow LAN: punch meanwhile.
			case <-ctx.Done():
				wait.Stop()
				return punchPath{}, ctx.Err()
			}
		}
	}
	if !remoteHolepunchable {
		return punchPath{}, ErrCannotHolepunch
	}

	serverRelay := pl.Holepunch.Relays[0]
	for _, r := range pl.Holepunch.Relays {
		if sameAddr(r.RelayAddress, c.relayAddress) {
			serverRelay = r
			break
		}
	}
	n.stats.punchAttempts.Add(1)
	defer func() {
		if err == nil {
			n.stats.punchSuccesses.Add(1)
		}
	}()
	hp := &clientPunch{d: d, id: pl.Holepunch.ID, secure: wire.NewSecurePayload(c.res.HolepunchSecret, random32())}
	hp.hosts = []netip.Addr{c.serverAddress.Addr()}
	// A punch from a host the server reported (or the one we know)
	// connects us, on whichever of our sockets it reached.
	arrived := make(chan punchPath, 1)
	arrive := func(s *udx.Socket, from netip.AddrPort) {
		if !hp.isRemoteHost(from.Addr()) {
			return
		}
		select {
		case arrived <- punchPath{sock: s, from: from, how: PathHolepunch}:
		default:
		}
	}
	stop := n.watchPunches(&punchWatch{fn: arrive})
	defer stop()
	hp.arrive = arrive

	done := make(chan error, 1)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	go func() { done <- hp.run(pctx, c.serverAddress, serverRelay) }()
	var out punchPath
	defer func() { n.log.Debug("dht: holepunch done", "path", out.how, "from", out.from, "err", err) }()
	runDone := false
	select {
	case out = <-arrived:
	case p, ok := <-lan:
		if ok {
			out = p
		} else {
			// The LAN ping failed; keep punching.
			select {
			case out = <-arrived:
			case out = <-path:
				out.how = PathPeerFirst
			case err = <-done:
				runDone = true
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
	case out = <-path:
		out.how = PathPeerFirst
	case err = <-done:
		runDone = true
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			err = ErrHolepunchAborted
		}
		if errors.Is(err, rpc.ErrTimeout) {
			// Say what timed out: the server went silent mid-punch.
			err = ErrHolepunchAborted.with(fmt.Errorf("no answer to a holepunch round: %w", err))
		}
		// A punch may have won the race with the error.
		select {
		case out = <-arrived:
			err = nil
		default:
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	pcancel()
	hp.mu.Lock()
	pool := hp.pool
	hp.mu.Unlock()
	if pool != nil {
		// Wait for run to stop using the pool before closing it.
		if !runDone {
			<-done
		}
		pool.close(out.sock, d.stream.Done())
	}
	return out, err
}

// clientPunch is the client's side of the PEER_HOLEPUNCH rounds.
type clientPunch struct {
	d      *dialer
	id     uint64
	secure *wire.SecurePayload
	round  uint64

	arrive func(*udx.Socket, netip.AddrPort)

	mu             sync.Mutex
	pool           *punchPool
	hosts          []netip.Addr
	remoteFirewall wire.Firewall
	remoteAddrs    []holepunch.Remote
	remotePunching bool
}

func (p *clientPunch) isRemoteHost(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Contains(p.hosts, a)
}

// update sends one round and applies the server's answer.
func (p *clientPunch) update(ctx context.Context, peerAddress, relay netip.AddrPort, pl *wire.HolepunchPayload) (hpReply, wire.HolepunchPayload, error) {
	d := p.d
	pl.Round = p.round
	p.round++
	enc, err := p.secure.Encrypt(pl, rand.Reader)
	if err != nil {
		return hpReply{}, wire.HolepunchPayload{}, err
	}
	rep, err := d.n.peerHolepunch(ctx, d.target, p.id, enc, peerAddress, relay)
	if err != nil {
		return hpReply{}, wire.HolepunchPayload{}, err
	}
	remote, err := p.secure.Decrypt(rep.payload)
	if err != nil {
		return hpReply{}, wire.HolepunchPayload{}, ErrHolepunchInvalid
	}
	if remote.Error != wire.ErrorNone {
		return rep, remote, ErrRemoteAborted.with(remote.Error)
	}
	echoed := remote.RemoteToken != nil && pl.Token != nil && *remote.RemoteToken == *pl.Token
	p.mu.Lock()
	p.remoteFirewall = remote.Firewall
	if remote.Firewall != wire.FirewallUnknown {
		p.d.theirFW.Store(uint64(remote.Firewall))
	}
	p.remotePunching = remote.Punching
	p.remoteAddrs = updateRemotes(remote.Addresses, p.remoteAddrs, echoed, peerAddress.Addr())
	for _, a := range remote.Addresses {
		if !slices.Contains(p.hosts, a.Addr()) {
			p.hosts = append(p.hosts, a.Addr())
		}
	}
	p.mu.Unlock()
	return rep, remote, nil
}

func (p *clientPunch) abort(ctx context.Context, sr wire.RelayInfo, err error) error {
	_, _, _ = p.update(ctx, sr.PeerAddress, sr.RelayAddress, &wire.HolepunchPayload{Error: wire.ErrorAborted})
	return err
}

// run is probeRound then roundPunch; it returns only on failure (success
// is a punch arriving, which the caller watches for).
func (p *clientPunch) run(ctx context.Context, serverAddress netip.AddrPort, sr wire.RelayInfo) error {
	n := p.d.n
	_, ttl := n.socket()
	c := p.d.connect
	var token *[32]byte
	for attempt := 0; ; attempt++ {
		// Open our NAT towards the server with a low-TTL punch.
		_ = ttl.SendTTL(holepunch.Punch, serverAddress, holepunch.LowTTL)
		fw, addrs := n.natState()
		rep, remote, err := p.update(ctx, sr.PeerAddress, sr.RelayAddress, &wire.HolepunchPayload{
			Firewall: fw, Addresses: nonNil(addrs), RemoteAddress: serverAddress})
		if err != nil {
			if fw >= wire.FirewallRandom && errors.Is(err, ErrRemoteAborted) {
				// A hyperdht server aborts a probe round, without naming
				// its firewall, when both NATs randomize (holepuncher.js
				// _unstable); with ours randomizing, that is the verdict.
				return ErrDoubleRandomized.with(err)
			}
			return err
		}
		token = remote.Token
		p.mu.Lock()
		rfw := p.remoteFirewall
		p.mu.Unlock()
		if rfw == wire.FirewallUnknown {
			if !sleepCtx(ctx.Done(), unknownGrace) {
				return ctx.Err()
			}
		}
		if fw == wire.FirewallUnknown {
			fw, _ = n.waitNAT(ctx.Done(), 2*time.Second)
		}
		if (rfw == wire.FirewallUnknown || token == nil) && attempt == 0 {
			continue
		}
		if rfw == wire.FirewallUnknown || fw == wire.FirewallUnknown {
			return p.abort(ctx, sr, ErrHolepunchProbeTimeout)
		}
		if rfw >= wire.FirewallRandom && fw >= wire.FirewallRandom {
			return p.abort(ctx, sr, ErrDoubleRandomized)
		}
		n.log.Debug("dht: probe round", "attempt", attempt, "ours", fw, "theirs", rfw, "token", token != nil)
		if sameAddr(sr.RelayAddress, c.relayAddress) && !sameAddr(serverAddress, rep.peerAddress) {
			serverAddress = rep.peerAddress
			_ = ttl.SendTTL(holepunch.Punch, serverAddress, holepunch.LowTTL)
		}
		break
	}

	// roundPunch: freeze our view and tell the server to punch.
	fw, addrs := n.natState()
	p.mu.Lock()
	rfw := p.remoteFirewall
	p.mu.Unlock()
	random := fw >= wire.FirewallRandom || rfw >= wire.FirewallRandom
	if random {
		if !n.acquireRandomPunch(time.Now()) {
			return ErrHolepunchAborted.with(errors.New("another random-NAT punch is running (one per 20 s)"))
		}
		defer n.releaseRandomPunch(time.Now())
	}
	ourToken := p.secure.Token(serverAddress.Addr().String())
	_, _, err := p.update(ctx, serverAddress, c.relayAddress, &wire.HolepunchPayload{
		Firewall: fw, Punching: true, Addresses: nonNil(addrs), Token: &ourToken, RemoteToken: token})
	if err != nil {
		return err
	}
	p.mu.Lock()
	punching, remotes := p.remotePunching, slices.Clone(p.remoteAddrs)
	rfw = p.remoteFirewall
	p.mu.Unlock()
	if !punching {
		return ErrRemoteNotHolepunching
	}
	verified := slices.ContainsFunc(remotes, func(r holepunch.Remote) bool { return r.Verified })
	strategy, err := holepunch.Choose(punchFirewall(fw), punchFirewall(rfw), verified)
	if err != nil {
		if errors.Is(err, holepunch.ErrDoubleRandomized) {
			return ErrDoubleRandomized
		}
		return ErrRemoteNotPunchable.with(err)
	}
	n.log.Debug("dht: punching", "strategy", strategy, "remotes", remotes)
	pctx, cancel := context.WithTimeout(ctx, punchWaitTimeout)
	defer cancel()
	cfg := holepunch.Config{Strategy: strategy, Initiator: true, Remote: remotes, Socket: ttl}
	if strategy == holepunch.StrategyBirthday {
		if pool, ok := n.newPunchPool(p.arrive).(*punchPool); ok {
			p.mu.Lock()
			p.pool = pool
			p.mu.Unlock()
			cfg.Pool = pool
		}
	}
	err = holepunch.Run(pctx, cfg)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return ErrHolepunchTimeout.with(err)
}

func nonNil(a []netip.AddrPort) []netip.AddrPort {
	if a == nil {
		return []netip.AddrPort{}
	}
	return a
}

// spent reports whether the Noise handshake was used up by a reply.
func (d *dialer) spent() bool {
	d.hsMu.Lock()
	defer d.hsMu.Unlock()
	return d.hsDone
}
