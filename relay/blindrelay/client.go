package blindrelay

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/keytunnel/keytunnel/internal/protomux"
)

// LocalStream is what Pair needs of the peer's own raw stream: its id,
// which the relay connects its allocated stream to. *udx.Stream has it.
type LocalStream interface {
	ID() uint32
}

// Client is the peer side of a blind-relay channel: it asks the relay to
// pair its raw stream with the other peer's.
//
// A Client owns no goroutine: replies arrive on the Mux's dispatcher and
// wake the Pair call waiting for them.
type Client struct {
	ch        *protomux.Channel
	pairMsg   *protomux.Message[Pair]
	unpairMsg *protomux.Message[Unpair]

	mu     sync.Mutex
	reqs   map[Token]*clientReq
	closed bool
	err    error // why the channel closed, once closed
}

type clientReq struct {
	isInitiator bool
	res         chan pairResult // buffered 1; written once under Client.mu
}

type pairResult struct {
	id  uint32
	err error
}

// NewClient opens the blind-relay channel on mux. id is the channel id,
// which must be what the relay accepts the channel with: hyperdht uses the
// client's own public key (the relay sees it as the connection's remote
// public key). To avoid racing the relay's OPEN, create it inside
// StartMux's setup or before the Mux can have read anything.
func NewClient(mux *protomux.Mux, id []byte) (*Client, error) {
	c := &Client{reqs: map[Token]*clientReq{}}
	c.ch = mux.NewChannel(protomux.ChannelOptions{
		Protocol: Protocol,
		ID:       id,
		OnClose:  func(_ *protomux.Channel, isRemote bool) { c.teardown(ErrChannelClosed) },
	})
	c.pairMsg = protomux.AddMessage(c.ch, pairCodec{}, func(_ *protomux.Channel, p Pair) { c.onPair(p) })
	c.unpairMsg = protomux.AddMessage[Unpair](c.ch, unpairCodec{}, nil)
	if err := c.ch.Open(nil); err != nil {
		if errors.Is(err, protomux.ErrDuplicateChannel) {
			return nil, fmt.Errorf("%w: %w", ErrDuplicateChannel, err)
		}
		return nil, fmt.Errorf("blindrelay: open channel: %w", err)
	}
	return c, nil
}

// WaitOpen waits until the relay's side of the channel is open. Pair does
// not need it (messages sent earlier are buffered by the relay's protomux);
// it tells a caller that the relay speaks blind-relay at all.
func (c *Client) WaitOpen(ctx context.Context) error {
	ok, err := c.ch.WaitOpened(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return c.closeErr()
	}
	return nil
}

// Pair asks the relay to pair local with the peer that presents the same
// token in the other role, and returns the relay's stream id. The caller
// then connects local to (that id, the relay's address) on the socket of
// its connection to the relay, and runs its end-to-end encrypted stream
// over it.
//
// Pair waits for the relay's answer until ctx ends; the relay answers only
// once the other peer has asked too, so bound ctx (hyperdht uses 15 s).
// When ctx ends first an unpair is sent so the relay frees the slot.
// Only one request per token may be pending (ErrAlreadyPairing).
func (c *Client) Pair(ctx context.Context, isInitiator bool, token Token, local LocalStream) (uint32, error) {
	r := &clientReq{isInitiator: isInitiator, res: make(chan pairResult, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, fmt.Errorf("blindrelay: pair: %w", c.err)
	}
	if _, ok := c.reqs[token]; ok {
		c.mu.Unlock()
		return 0, ErrAlreadyPairing
	}
	c.reqs[token] = r
	c.mu.Unlock()

	err := c.pairMsg.Send(Pair{IsInitiator: isInitiator, Token: token, ID: uint64(local.ID())})
	if err != nil {
		c.drop(token, r)
		return 0, fmt.Errorf("blindrelay: pair: %w", c.sendErr(err))
	}
	select {
	case res := <-r.res:
		return res.id, res.err
	case <-ctx.Done():
		if c.drop(token, r) {
			_ = c.unpairMsg.Send(Unpair{Token: token})
		}
		// A reply may have won the race; the unpair above has then torn
		// the relayed streams down again, so report the cancellation.
		return 0, fmt.Errorf("blindrelay: pair: %w", ctx.Err())
	}
}

// Unpair cancels the pending Pair for token (it returns
// ErrPairingCancelled) and tells the relay to drop the pairing, or to tear
// down the relayed streams if it already matched.
func (c *Client) Unpair(token Token) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("blindrelay: unpair: %w", c.err)
	}
	if r, ok := c.reqs[token]; ok {
		delete(c.reqs, token)
		r.res <- pairResult{err: ErrPairingCancelled}
	}
	c.mu.Unlock()
	if err := c.unpairMsg.Send(Unpair{Token: token}); err != nil {
		return fmt.Errorf("blindrelay: unpair: %w", c.sendErr(err))
	}
	return nil
}

// Close closes the channel (not the Mux); pending Pairs fail with
// ErrClosed. Idempotent.
func (c *Client) Close() error {
	c.teardown(ErrClosed)
	c.ch.Close()
	return nil
}

// Done is closed when the channel has closed.
func (c *Client) Done() <-chan struct{} { return c.ch.Closed() }

func (c *Client) onPair(p Pair) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.reqs[p.Token]
	// As in the reference, a reply must match a pending request in token
	// and role; anything else is ignored.
	if !ok || r.isInitiator != p.IsInitiator {
		return
	}
	delete(c.reqs, p.Token)
	if !ValidStreamID(p.ID) {
		r.res <- pairResult{err: fmt.Errorf("%w: relay answered %d", ErrInvalidStreamID, p.ID)}
		return
	}
	r.res <- pairResult{id: uint32(p.ID)}
}

// drop removes r if it is still the pending request for token.
func (c *Client) drop(token Token, r *clientReq) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reqs[token] != r {
		return false
	}
	delete(c.reqs, token)
	return true
}

func (c *Client) teardown(why error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.err = why
	for t, r := range c.reqs {
		r.res <- pairResult{err: fmt.Errorf("blindrelay: pair: %w", why)}
		delete(c.reqs, t)
	}
}

func (c *Client) closeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return ErrChannelClosed
}

// sendErr maps a protomux send failure to this package's sentinels while
// keeping the cause.
func (c *Client) sendErr(err error) error {
	if errors.Is(err, protomux.ErrChannelClosed) {
		return fmt.Errorf("%w: %w", c.closeErr(), err)
	}
	return err
}

// pairCodec and unpairCodec adapt the message functions to protomux.
type pairCodec struct{}

func (pairCodec) Append(b []byte, p Pair) []byte { return AppendPair(b, p) }
func (pairCodec) Decode(b []byte) (Pair, error)  { return DecodePair(b) }

type unpairCodec struct{}

func (unpairCodec) Append(b []byte, u Unpair) []byte { return AppendUnpair(b, u) }
func (unpairCodec) Decode(b []byte) (Unpair, error)  { return DecodeUnpair(b) }
