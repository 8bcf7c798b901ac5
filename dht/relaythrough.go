package dht

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/protomux"
	"github.com/keytunnel/keytunnel/relay/blindrelay"
	"github.com/keytunnel/keytunnel/udx"
)

// relayPairTimeout bounds a blind-relay pairing (connect.js, server.js).
const relayPairTimeout = 15 * time.Second

// upgradeConfirmWait is how long a relayed stream that moved to a direct
// path waits for the peer's first packet there before going back.
const upgradeConfirmWait = 10 * time.Second

// RelayThrough picks the blind-relay server a connection falls back to
// when holepunching cannot work (both NATs randomize). It is called once
// per connection; a zero key means no relay for this one. hyperdht's
// relayThrough option takes a key, a list (one picked at random) or a
// function: RelayKeys and the function form cover all three.
type RelayThrough func() key.PublicKey

// RelayKeys returns a RelayThrough that picks one of keys at random.
func RelayKeys(keys ...key.PublicKey) RelayThrough {
	if len(keys) == 0 {
		return nil
	}
	return func() key.PublicKey { return keys[rand.IntN(len(keys))] }
}

// relayLink is one side of a pairing through a blind relay: a normal
// hyperdht connection to the relay server carrying the blind-relay
// protomux channel, and the relay's stream our raw stream connects to.
type relayLink struct {
	conn     *Conn
	raw      *udx.Stream
	mux      *protomux.Mux
	client   *blindrelay.Client
	sock     *udx.Socket
	addr     netip.AddrPort
	remoteID uint32
	relayPK  key.PublicKey

	// upgrading is set while the relayed stream tries a direct path, so
	// that the relay dying then does not take the stream with it.
	upgrading   atomic.Bool
	released    chan struct{} // closed once the stream needs the relay no more
	releaseOnce sync.Once
}

// release lets the relay go: the stream has moved to a direct path.
func (r *relayLink) release() { r.releaseOnce.Do(func() { close(r.released) }) }

func (r *relayLink) Close() {
	if r.client != nil {
		r.client.Close()
	}
	if r.mux != nil {
		r.mux.Close()
	}
	r.conn.Close()
}

// pairThroughRelay connects to the relay server relayPK and pairs local
// under token (connect.js relayConnection, server.js _relayConnection).
// The relayed packets then flow over the socket of the connection to the
// relay, to the relay's address, as the reference connects them.
//
// onDialed learns the relay's path as soon as the connection to it is up:
// relayed packets can arrive before Pair returns, and the raw stream's
// firewall must hold them rather than take them for the peer's own.
func (n *Node) pairThroughRelay(ctx context.Context, relayPK key.PublicKey, isInitiator bool, token [32]byte, local *udx.Stream, onDialed func(*udx.Socket, netip.AddrPort)) (*relayLink, error) {
	ctx, cancel := context.WithTimeout(ctx, relayPairTimeout)
	defer cancel()
	conn, err := n.Dial(ctx, relayPK, nil)
	if err != nil {
		return nil, fmt.Errorf("dht: relay %s: %w", relayPK, err)
	}
	link := &relayLink{conn: conn, relayPK: relayPK, released: make(chan struct{})}
	raw, ok := conn.Raw().(*udx.Stream)
	if !ok {
		conn.Close()
		return nil, errors.New("dht: relay connection is not a udx stream")
	}
	link.raw = raw
	link.sock = raw.Socket()
	link.addr, _ = netip.ParseAddrPort(raw.RemoteAddr().String())
	if onDialed != nil {
		onDialed(link.sock, link.addr)
	}
	pk := conn.PublicKey()
	link.mux, err = blindrelay.StartMux(protomux.SecretStream(conn), protomux.Options{}, func(m *protomux.Mux) error {
		c, err := blindrelay.NewClient(m, pk[:])
		link.client = c
		return err
	})
	if err != nil {
		link.Close()
		return nil, fmt.Errorf("dht: relay %s: %w", relayPK, err)
	}
	id, err := link.client.Pair(ctx, isInitiator, blindrelay.Token(token), local)
	if err != nil {
		link.Close()
		return nil, ErrRelayAborted.with(err)
	}
	link.remoteID = id
	return link, nil
}

// keepRelay holds the relay connection open while the relayed stream
// lives: when either ends, both go. Both sides call it once per relayed
// connection, which is what Stats.RelayFallbacks counts.
func (n *Node) keepRelay(link *relayLink, st *udx.Stream) {
	n.stats.relayFallbacks.Add(1)
	n.stats.setRelayed(st, link)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.stats.setRelayed(st, nil)
		select {
		case <-st.Done():
		case <-link.raw.Done():
			if !link.upgrading.Load() {
				st.Destroy()
			}
		case <-link.released:
		case <-n.ctx.Done():
		}
		link.Close()
	}()
}

// upgradeFromRelay moves a relayed stream to a direct path the peer or a
// late punch revealed (hyperdht's onsocket on a connected raw stream, and
// confirmDirectUpgrade): the stream changes its remote, says so with an
// empty MESSAGE once everything sent through the relay is acknowledged,
// and lets the relay go when the peer's packets arrive on the direct path.
// If they do not within upgradeConfirmWait, the stream goes back to the
// relay (the reference would stay on a silent path).
func (n *Node) upgradeFromRelay(st *udx.Stream, link *relayLink, sock *udx.Socket, remoteID uint32, to netip.AddrPort) {
	link.upgrading.Store(true)
	defer link.upgrading.Store(false)
	acked, err := st.ChangeRemote(sock, remoteID, to)
	if err != nil {
		n.log.Debug("dht: no upgrade from the relay", "to", to, "err", err)
		return
	}
	confirmed := st.PathConfirmed()
	t := time.NewTimer(upgradeConfirmWait)
	defer t.Stop()
	select {
	case <-acked:
		_ = st.Send(nil)
	case <-confirmed:
	case <-t.C:
	case <-st.Done():
		return
	case <-n.ctx.Done():
		return
	}
	select {
	case <-confirmed:
		n.log.Debug("dht: relayed connection upgraded to a direct path", "to", to)
		n.stats.relayUpgrades.Add(1)
		link.release()
	case <-t.C:
		n.log.Debug("dht: the direct path stayed silent, back to the relay", "to", to)
		_, _ = st.ChangeRemote(link.sock, link.remoteID, link.addr)
	case <-st.Done():
	case <-n.ctx.Done():
	}
}

// relayPath is where relayed packets come from, once known.
type relayPath struct {
	sock *udx.Socket
	addr netip.AddrPort
}

func (r *relayPath) is(sock *udx.Socket, from netip.AddrPort) bool {
	return r != nil && r.sock == sock && sameAddr(r.addr, from)
}

// BlindRelay is a blind-relay server reachable at a public key: peers
// connect to it like to any server and pair their raw streams through it
// (`keytunnel relay`). It relays udx packets it cannot read.
type BlindRelay struct {
	l   *Listener
	srv *blindrelay.Server
	wg  sync.WaitGroup
}

// ServeBlindRelay listens on kp and serves the blind-relay protocol to
// every connection. opts may be nil; its Streams is always this node's.
func (n *Node) ServeBlindRelay(ctx context.Context, kp key.KeyPair, opts *blindrelay.ServerOptions) (*BlindRelay, error) {
	if n.sock == nil {
		return nil, ErrNoStreams
	}
	var o blindrelay.ServerOptions
	if opts != nil {
		o = *opts
	}
	o.Streams = n.sock.UDX()
	srv, err := blindrelay.NewServer(o)
	if err != nil {
		return nil, err
	}
	l, err := n.Listen(ctx, kp, nil)
	if err != nil {
		srv.Close()
		return nil, err
	}
	b := &BlindRelay{l: l, srv: srv}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := l.AcceptConn(context.Background())
			if err != nil {
				return
			}
			rpk := c.RemotePublicKey()
			// The source counts towards MaxSessionsPerSource; the
			// streams stay unpinned (RemoteAddr unset), as the
			// reference's are.
			from, _ := netip.ParseAddrPort(c.RemoteAddr().String())
			_, err = blindrelay.StartMux(protomux.SecretStream(c), protomux.Options{}, func(m *protomux.Mux) error {
				_, err := srv.Accept(m, blindrelay.AcceptOptions{ID: rpk[:], Source: from.Addr()})
				return err
			})
			if err != nil {
				n.log.Debug("dht: blind relay session failed", "remote", rpk, "err", err)
				c.Close()
			}
		}
	}()
	return b, nil
}

// PublicKey is the relay's key, what peers pass as RelayThrough.
func (b *BlindRelay) PublicKey() key.PublicKey { return b.l.PublicKey() }

// Stats are the relay server's counters.
func (b *BlindRelay) Stats() blindrelay.Stats { return b.srv.Stats() }

// Close stops accepting, tears down every relayed pair and waits.
func (b *BlindRelay) Close() error {
	b.l.Close()
	b.wg.Wait()
	return b.srv.Close()
}
