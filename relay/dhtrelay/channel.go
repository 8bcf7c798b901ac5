package dhtrelay

import (
	"bytes"
	"fmt"

	"github.com/keytunnel/keytunnel/internal/compact"
	"github.com/keytunnel/keytunnel/internal/protomux"
)

// Protocol is the protomux protocol name of the relay channel. The channel
// has no id and no handshake; both sides open it as soon as the transport
// is up (lib/protocol.js).
const Protocol = "@hyperswarm/dht-relay"

// AppendOpenFrame appends the protomux OPEN frame of the relay channel with
// local channel id ch (normally 1):
//
//	00 01 uint(ch) 15 "@hyperswarm/dht-relay" 00
func AppendOpenFrame(b []byte, ch uint64) []byte {
	return protomux.AppendOpen(b, ch, Protocol, nil, nil)
}

// AppendFrame appends m as a complete protomux frame on the sender's local
// channel id ch:
//
//	uint(ch) uint(type) body
//
// Example: ping on channel 1 is 01 01.
func AppendFrame(b []byte, ch uint64, m Message) []byte {
	b = compact.AppendUint(b, ch)
	b = compact.AppendUint(b, uint64(m.Type()))
	return m.AppendBody(b)
}

// codec adapts one message type to protomux's Codec. Decode copies the
// body first: protomux reuses frame buffers after the handler returns,
// and decoded messages alias what they were decoded from.
type codec struct{ t Type }

func (c codec) Append(b []byte, m Message) []byte { return m.AppendBody(b) }

func (c codec) Decode(b []byte) (Message, error) {
	return DecodeMessage(c.t, bytes.Clone(b))
}

// Channel is the relay channel on a protomux Mux: the 28 message types
// registered in the reference's order, so that type ids match.
type Channel struct {
	ch   *protomux.Channel
	msgs [NumTypes]*protomux.Message[Message]
}

// ChannelOptions configure NewChannel.
type ChannelOptions struct {
	// OnMessage gets every received message, on the Mux's dispatcher
	// goroutine, in wire order. A body that does not decode destroys the
	// Mux (as the reference's throw destroys the stream).
	OnMessage func(Message)
	// OnClose runs once when the channel closes (remote: the peer closed
	// it or the transport ended).
	OnClose func(isRemote bool)
}

// NewChannel registers the relay channel on m and opens it.
func NewChannel(m *protomux.Mux, opts ChannelOptions) (*Channel, error) {
	c := &Channel{}
	co := protomux.ChannelOptions{Protocol: Protocol}
	if opts.OnClose != nil {
		co.OnClose = func(_ *protomux.Channel, isRemote bool) { opts.OnClose(isRemote) }
	}
	c.ch = m.NewChannel(co)
	for t := range Type(NumTypes) {
		var h func(*protomux.Channel, Message)
		if opts.OnMessage != nil {
			h = func(_ *protomux.Channel, msg Message) { opts.OnMessage(msg) }
		}
		c.msgs[t] = protomux.AddMessage[Message](c.ch, codec{t}, h)
	}
	if err := c.ch.Open(nil); err != nil {
		return nil, fmt.Errorf("dhtrelay: opening channel: %w", err)
	}
	return c, nil
}

// Send queues m on the channel. It does not block (see protomux's
// Message.Send for the errors).
func (c *Channel) Send(m Message) error {
	t := m.Type()
	if t >= NumTypes {
		return fmt.Errorf("%w: %d", ErrUnknownType, t)
	}
	return c.msgs[t].Send(m)
}

// Close closes the channel (not the Mux).
func (c *Channel) Close() { c.ch.Close() }

// Closed is closed once the channel has closed.
func (c *Channel) Closed() <-chan struct{} { return c.ch.Closed() }

// Mux returns the channel's Mux.
func (c *Channel) Mux() *protomux.Mux { return c.ch.Mux() }
