package protomux

import (
	"context"
	"fmt"
)

// ChannelOptions describe a channel. A channel pairs with the peer's
// channel of the same (Protocol, ID).
type ChannelOptions struct {
	Protocol string
	// ID is the optional channel id; nil and empty are the same.
	ID []byte
	// Aliases are extra protocol names the peer may open this channel by.
	Aliases []string
	// AllowDuplicate lets this channel open while another channel with the
	// same (Protocol, ID) is open (Node's unique: false).
	AllowDuplicate bool
	// Handshake marks a channel whose OPEN carries a handshake: Open's
	// argument is sent after the id, and OnOpen gets the peer's (the rest
	// of its OPEN). Without it, both are empty.
	Handshake bool
	// OnOpen runs once the peer's OPEN has paired with this channel.
	OnOpen func(c *Channel, handshake []byte)
	// OnClose runs once when the channel closes; isRemote is false only
	// for a local Close.
	OnClose func(c *Channel, isRemote bool)
	// UserData is the caller's.
	UserData any
}

// Channel is one side of a protomux channel. Create it with NewChannel,
// register its messages with AddMessage, then Open it.
type Channel struct {
	mux  *Mux
	opts ChannelOptions
	msgs []func(c *Channel, body []byte) error

	// guarded by mux.mu
	info      *info
	localID   uint64
	remoteID  uint64
	opening   bool // Open was called
	opened    bool
	closed    bool
	openedSig chan struct{} // closed when opened or closed
	closedSig chan struct{}
}

// NewChannel returns an unopened channel on m.
func (m *Mux) NewChannel(opts ChannelOptions) *Channel {
	return &Channel{mux: m, opts: opts, openedSig: make(chan struct{}), closedSig: make(chan struct{})}
}

// Mux returns the channel's Mux.
func (c *Channel) Mux() *Mux { return c.mux }

// Protocol returns the channel's protocol name.
func (c *Channel) Protocol() string { return c.opts.Protocol }

// ID returns the channel's id (nil if none).
func (c *Channel) ID() []byte { return c.opts.ID }

// UserData returns ChannelOptions.UserData.
func (c *Channel) UserData() any { return c.opts.UserData }

// Closed is closed when the channel has closed.
func (c *Channel) Closed() <-chan struct{} { return c.closedSig }

// WaitOpened waits until the peer's OPEN paired with this channel (true)
// or the channel closed first (false, nil).
func (c *Channel) WaitOpened(ctx context.Context) (bool, error) {
	select {
	case <-c.openedSig:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	c.mux.mu.Lock()
	defer c.mux.mu.Unlock()
	return c.opened, nil
}

// Codec encodes and decodes one message type. Decode gets exactly the
// message body (the rest of the frame, or the batch entry) and may ignore
// trailing bytes, as compact-encoding decoders do; it must not retain b
// past the call unless it copies.
type Codec[T any] interface {
	Append(b []byte, v T) []byte
	Decode(b []byte) (T, error)
}

// Raw is the identity codec (Node's c.raw). Decode copies.
type Raw struct{}

// Append appends v.
func (Raw) Append(b, v []byte) []byte { return append(b, v...) }

// Decode returns a copy of b.
func (Raw) Decode(b []byte) ([]byte, error) { return append([]byte{}, b...), nil }

// Message is a registered message type of a channel.
type Message[T any] struct {
	ch    *Channel
	typ   uint64
	codec Codec[T]
}

// AddMessage registers the next message type (0, 1, ... in call order) of
// c, which must not be opened yet. handler, which may be nil, runs on the
// dispatcher for every received message of this type; a Decode error
// destroys the Mux with ErrBadMessage.
func AddMessage[T any](c *Channel, codec Codec[T], handler func(c *Channel, v T)) *Message[T] {
	c.mux.mu.Lock()
	defer c.mux.mu.Unlock()
	if c.opening {
		panic(ErrAlreadyOpened)
	}
	typ := uint64(len(c.msgs))
	c.msgs = append(c.msgs, func(ch *Channel, body []byte) error {
		v, err := codec.Decode(body)
		if err != nil {
			return fmt.Errorf("%w: %q type %d: %w", ErrBadMessage, ch.opts.Protocol, typ, err)
		}
		if handler != nil {
			handler(ch, v)
		}
		return nil
	})
	return &Message[T]{ch: c, typ: typ, codec: codec}
}

// SkipMessage reserves the next message type without handling it (Node's
// addMessage(null)).
func (c *Channel) SkipMessage() {
	c.mux.mu.Lock()
	defer c.mux.mu.Unlock()
	c.msgs = append(c.msgs, nil)
}

// Send queues v. It does not block; it fails with ErrNotOpen before Open,
// ErrChannelClosed after the channel closed, the Mux's error after it was
// destroyed, and ErrWriteQueueFull when the queue is over its bound.
// Messages sent before the peer's OPEN are buffered by the peer.
func (msg *Message[T]) Send(v T) error {
	c := msg.ch
	m := c.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.err != nil:
		return m.err
	case c.closed:
		return ErrChannelClosed
	case !c.opening:
		return ErrNotOpen
	case m.wqBytes > m.opts.MaxWriteQueue:
		return ErrWriteQueueFull
	}
	if m.corked > 0 {
		b := msg.codec.Append(AppendMessage(nil, 0, msg.typ, nil)[1:], v)
		m.pushBatchLocked(c.localID, b)
		return nil
	}
	m.enqueueLocked(msg.codec.Append(AppendMessage(nil, c.localID, msg.typ, nil), v))
	return nil
}

// Open sends the channel's OPEN (with handshake, for a Handshake channel).
// If the peer has already opened (protocol, id), the channel pairs with it
// and OnOpen runs soon on the dispatcher; otherwise it waits for the peer's
// OPEN or REJECT.
func (c *Channel) Open(handshake []byte) error {
	m := c.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.err != nil:
		return m.err
	case c.closed:
		return ErrChannelClosed
	case c.opening:
		return ErrAlreadyOpened
	}
	in := m.getInfoLocked(c.opts.Protocol, c.opts.ID, c.opts.Aliases)
	if !c.opts.AllowDuplicate && in.opened > 0 {
		return fmt.Errorf("%w: %q", ErrDuplicateChannel, c.opts.Protocol)
	}
	c.opening = true
	c.info = in
	var idx uint64
	if n := len(m.free); n > 0 {
		idx = m.free[n-1]
		m.free = m.free[:n-1]
	} else {
		idx = uint64(len(m.local))
		m.local = append(m.local, nil)
	}
	m.local[idx] = c
	c.localID = idx + 1
	in.opened++

	if len(in.incoming) > 0 {
		rid := in.incoming[0]
		in.incoming = in.incoming[1:]
		m.backlog--
		if r := m.remote[rid-1]; r != nil {
			r.session = c
			c.remoteID = rid
			m.postLocked(func() {
				if err := c.fullyOpen(); err != nil {
					m.Destroy(err)
				}
			})
		}
	} else {
		in.outgoing = append(in.outgoing, c.localID)
	}
	if !c.opts.Handshake {
		handshake = nil
	}
	m.write0Locked(AppendOpen(nil, c.localID, c.opts.Protocol, c.opts.ID, handshake))
	return nil
}

// Close sends CLOSE and closes the channel locally; OnClose runs on the
// dispatcher with isRemote = false. Idempotent.
func (c *Channel) Close() {
	m := c.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.closed {
		return
	}
	if !c.opening {
		c.closed = true
		close(c.openedSig)
		close(c.closedSig)
		return
	}
	if m.err == nil {
		m.write0Locked(AppendClose(nil, c.localID))
	}
	c.closeLocked(false)
}

// Cork corks the channel's Mux.
func (c *Channel) Cork() { c.mux.Cork() }

// Uncork uncorks the channel's Mux.
func (c *Channel) Uncork() { c.mux.Uncork() }

func (c *Channel) closeLocked(isRemote bool) {
	if c.closed {
		return
	}
	m := c.mux
	c.closed = true
	c.info.opened--
	if c.remoteID > 0 {
		if r := m.remote[c.remoteID-1]; r != nil {
			m.dropPendingLocked(r)
		}
		m.remote[c.remoteID-1] = nil
		c.remoteID = 0
		// The peer has acknowledged this id, so it can be reused now;
		// otherwise only once its OPEN or REJECT arrives.
		m.free = append(m.free, c.localID-1)
	}
	m.local[c.localID-1] = nil
	c.localID = 0
	m.gcLocked(c.info)
	if !c.opened {
		close(c.openedSig)
	}
	close(c.closedSig)
	if fn := c.opts.OnClose; fn != nil {
		m.postLocked(func() { fn(c, isRemote) })
	}
}

// fullyOpen runs on the dispatcher once both OPENs are known: OnOpen, then
// the messages buffered meanwhile.
func (c *Channel) fullyOpen() error {
	m := c.mux
	m.mu.Lock()
	if c.opened || c.closed {
		m.mu.Unlock()
		return nil
	}
	r := m.remote[c.remoteID-1]
	hs := r.handshake
	r.handshake = nil
	if !c.opts.Handshake {
		hs = nil
	}
	m.mu.Unlock()
	if fn := c.opts.OnOpen; fn != nil {
		fn(c, hs)
	}
	for {
		m.mu.Lock()
		if c.closed || m.err != nil || r.pending == nil {
			break
		}
		if len(r.pending) == 0 {
			r.pending = nil
			select {
			case m.resumeSig <- struct{}{}:
			default:
			}
			break
		}
		p := r.pending[0]
		r.pending = r.pending[1:]
		m.buffered -= PendingEntryOverhead + len(p.body)
		m.mu.Unlock()
		if err := c.recv(p.typ, p.body); err != nil {
			return err
		}
	}
	if !c.closed && m.err == nil {
		c.opened = true
		close(c.openedSig)
	}
	m.mu.Unlock()
	return nil
}

// recv delivers one message on the dispatcher. Unknown types are ignored.
func (c *Channel) recv(typ uint64, body []byte) error {
	m := c.mux
	m.mu.Lock()
	var fn func(*Channel, []byte) error
	if typ < uint64(len(c.msgs)) {
		fn = c.msgs[typ]
	}
	m.mu.Unlock()
	if fn == nil {
		return nil
	}
	return fn(c, body)
}
