package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/libp2p/go-yamux/v5"
)

// Client opens connections to peers for callers that want them as
// net.Conns rather than on a local port. In mux mode (the default) each
// Open is a yamux stream over one session per peer, shared by every Open
// to that peer and dialed again by the first Open after it is lost; so
// only the first connection to a peer costs a DHT lookup and handshake.
// With ForwardOptions.Raw each Open is a peer connection of its own.
//
// Unlike a Forwarder, a Client does not back off: each Open that finds no
// session dials (concurrent ones share the dial), and its error is the
// dial's.
type Client struct {
	d    Dialer
	opts ForwardOptions
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	sess map[clientKey]*clientSession
}

// clientKey names a session: a peer's mux1 session carries its default
// service, its mux2 session named ones.
type clientKey struct {
	remote key.PublicKey
	mux2   bool
}

// clientSession is one peer's session, or the dial that brings it up:
// sess and err are set before done is closed.
type clientSession struct {
	done chan struct{}
	sess *session
	err  error
}

// NewClient returns a Client dialing with d. Of opts, Raw, DialTimeout
// and Logger apply.
func NewClient(d Dialer, opts ForwardOptions) *Client {
	opts.defaults()
	c := &Client{d: d, opts: opts, log: loggerOr(opts.Logger), sess: make(map[clientKey]*clientSession)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// Open returns a connection to the service behind remote.
func (c *Client) Open(ctx context.Context, remote key.PublicKey) (PeerConn, error) {
	return c.OpenService(ctx, remote, "")
}

// OpenService returns a connection to the named service behind remote
// (see ExposeOptions.Services); "" is its default service, as for Open.
// It waits for the server's answer, so a name the key does not serve, or
// one whose allow list lacks our key, fails here with ErrRefused and the
// server's reason. Not with Raw.
func (c *Client) OpenService(ctx context.Context, remote key.PublicKey, service string) (PeerConn, error) {
	if c.opts.Raw && service != "" {
		return nil, fmt.Errorf("%w: raw mode cannot name service %q", ErrBadService, service)
	}
	if c.opts.Raw {
		dctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
		defer cancel()
		return c.d.Dial(dctx, remote)
	}
	var err error
	// Two tries: the session may die between the lookup and OpenStream;
	// the second try dials its replacement.
	for range 2 {
		var sess *session
		if sess, err = c.session(ctx, clientKey{remote, service != ""}); err != nil {
			return nil, err
		}
		var st *yamux.Stream
		if st, err = sess.OpenStream(ctx); err != nil {
			sess.Close()
			continue
		}
		ms := sess.gate.stream(st)
		if service == "" {
			return streamConn{ms, remote}, nil
		}
		return openServiceConn(ctx, ms, remote, service)
	}
	return nil, err
}

// session returns the live session to remote, dialing it if there is none.
func (c *Client) session(ctx context.Context, remote clientKey) (*session, error) {
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	s := c.sess[remote]
	if s != nil {
		select {
		case <-s.done:
			if s.err != nil || s.sess.IsClosed() {
				s = nil
			}
		default: // a dial is under way: share it
		}
	}
	if s == nil {
		s = &clientSession{done: make(chan struct{})}
		c.sess[remote] = s
		c.wg.Add(1)
		go c.dial(s, remote)
	}
	c.mu.Unlock()
	select {
	case <-s.done:
		return s.sess, s.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, ErrClosed
	}
}

// dial brings s up and owns it: the session is closed with the Client.
// The dial runs on the Client's context, not the first caller's, since
// later callers share it.
func (c *Client) dial(s *clientSession, remote clientKey) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.DialTimeout)
	pre := preamble
	if remote.mux2 {
		pre = preamble2
	}
	s.sess, s.err = dialSession(ctx, c.d, remote.remote, pre, c.log.With("remote", remote.remote.String()))
	cancel()
	close(s.done)
	if s.err == nil {
		select {
		case <-s.sess.CloseChan():
		case <-c.ctx.Done():
			s.sess.Close()
		}
	}
	c.mu.Lock()
	if c.sess[remote] == s {
		delete(c.sess, remote)
	}
	c.mu.Unlock()
}

// Close closes every session (and so every stream opened on them) and
// waits for the Client's goroutines. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	c.cancel()
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}
