package protomux

import (
	"fmt"

	"github.com/keytunnel/keytunnel/internal/compact"
)

// Control message types (channel id 0).
const (
	TypeBatch  = 0
	TypeOpen   = 1
	TypeReject = 2
	TypeClose  = 3
)

// Wire limits of the reference.
const (
	// MaxBatch is where a corked batch is cut (Node's MAX_BATCH): a new
	// BATCH frame starts once the current one has reached 8 MiB.
	MaxBatch = 8 << 20
	// MaxBuffered is how many bytes of messages for not yet accepted
	// channels are buffered before reading pauses (Node's MAX_BUFFERED).
	MaxBuffered = 32768
	// PendingEntryOverhead is what each buffered message counts for on
	// top of its length (Node's byteSize: 512 + length).
	PendingEntryOverhead = 512
	// maxBatchDepth bounds BATCH-inside-BATCH nesting, which the reference
	// recurses into without limit.
	maxBatchDepth = 8
)

// AppendOpen appends an OPEN frame:
//
//	00 01 uint(localID) string(protocol) optionalBuffer(id) handshake...
//
// handshake is the already encoded handshake, or nil for channels without
// one.
func AppendOpen(b []byte, localID uint64, protocol string, id []byte, handshake []byte) []byte {
	b = append(b, 0, TypeOpen)
	b = compact.AppendUint(b, localID)
	b = compact.AppendString(b, protocol)
	b = compact.AppendBuffer(b, id) // optionalBuffer: nil and empty are both 00
	return append(b, handshake...)
}

// AppendReject appends a REJECT frame: 00 02 uint(remoteID), where remoteID
// is the id the peer used in its OPEN.
func AppendReject(b []byte, remoteID uint64) []byte {
	return compact.AppendUint(append(b, 0, TypeReject), remoteID)
}

// AppendClose appends a CLOSE frame: 00 03 uint(localID).
func AppendClose(b []byte, localID uint64) []byte {
	return compact.AppendUint(append(b, 0, TypeClose), localID)
}

// AppendMessage appends a channel message frame:
//
//	uint(localID) uint(type) body
func AppendMessage(b []byte, localID, typ uint64, body []byte) []byte {
	b = compact.AppendUint(b, localID)
	b = compact.AppendUint(b, typ)
	return append(b, body...)
}

// Batch builds a BATCH frame the way a corked Node mux does:
//
//	00 00 uint(firstChannel)
//	  { uint(len>0) entry[len] | 00 uint(newChannel) }*
//
// where each entry is "uint(type) body" for its channel, and control
// messages are entries on channel 0 without their leading 00. The zero
// value is an empty batch.
type Batch struct {
	buf     []byte
	cur     uint64
	entries int
}

// Len is the encoded size of the batch so far (what Node's batch state
// calls end).
func (bt *Batch) Len() int {
	if bt.entries == 0 {
		return 1 // Node counts one of the two leading zeros up front
	}
	return len(bt.buf)
}

// Entries is the number of messages in the batch.
func (bt *Batch) Entries() int { return bt.entries }

// Add appends one entry ("uint(type) body", or for channel 0 the control
// message without its leading 00) for channel ch.
func (bt *Batch) Add(ch uint64, entry []byte) {
	switch {
	case bt.entries == 0:
		bt.buf = compact.AppendUint(append(bt.buf[:0], 0, TypeBatch), ch)
		bt.cur = ch
	case bt.cur != ch:
		bt.buf = compact.AppendUint(append(bt.buf, 0), ch)
		bt.cur = ch
	}
	bt.buf = compact.AppendBuffer(bt.buf, entry)
	bt.entries++
}

// Bytes returns the BATCH frame, or nil for an empty batch. It aliases the
// Batch's buffer until Reset.
func (bt *Batch) Bytes() []byte {
	if bt.entries == 0 {
		return nil
	}
	return bt.buf
}

// Reset empties the batch, dropping its buffer (which Bytes handed out).
func (bt *Batch) Reset() { *bt = Batch{} }

// Msg is one message of a received frame: a BATCH is flattened into its
// entries. Channel 0 is the control channel; Body is what follows the
// type and aliases the frame.
type Msg struct {
	Channel uint64
	Type    uint64
	Body    []byte
}

// ParseFrame splits a received frame into its messages, flattening BATCH
// frames (also nested ones, up to a small depth). An empty frame has no
// messages. Only the framing is checked; control bodies are decoded by
// DecodeOpen and DecodeID. batched reports a BATCH of more than one
// message. The Msgs alias frame.
//
// Like the reference, an entry length that runs past the end of the frame
// is cut to the end rather than refused.
func ParseFrame(frame []byte) (msgs []Msg, batched bool, err error) {
	if len(frame) == 0 {
		return nil, false, nil
	}
	d := compact.NewDecoder(frame)
	ch := d.Uint()
	msgs, err = parseOne(nil, ch, d, 0)
	if err != nil {
		return nil, false, err
	}
	// Only a BATCH yields more than one message. Its header need not be
	// the bytes 00 00: channel 0 may come as a longer varint (fd 00 00),
	// which the reference decodes as 0 too.
	return msgs, len(msgs) > 1, nil
}

// parseOne reads "uint(type) body" (body = the rest of d) for channel ch.
func parseOne(msgs []Msg, ch uint64, d *compact.Decoder, depth int) ([]Msg, error) {
	typ := d.Uint()
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadFrame, err)
	}
	if ch != 0 || typ != TypeBatch {
		return append(msgs, Msg{Channel: ch, Type: typ, Body: d.Rest()}), nil
	}
	if depth >= maxBatchDepth {
		return nil, fmt.Errorf("%w: batch nested deeper than %d", ErrBadFrame, maxBatchDepth)
	}
	cur := d.Uint()
	for d.Err() == nil && d.Len() > 0 {
		n := d.Uint()
		if d.Err() != nil {
			break
		}
		if n == 0 {
			cur = d.Uint()
			continue
		}
		entry := d.Fixed(int(min(n, uint64(d.Len()))))
		var err error
		if msgs, err = parseOne(msgs, cur, compact.NewDecoder(entry), depth+1); err != nil {
			return nil, err
		}
	}
	if err := d.Err(); err != nil {
		return nil, fmt.Errorf("%w: batch: %w", ErrBadFrame, err)
	}
	return msgs, nil
}

// Open is a decoded OPEN body.
type Open struct {
	// ID is the sender's local id for the channel.
	ID       uint64
	Protocol string
	// Key is the channel's optional id (nil when absent or empty).
	Key []byte
	// Handshake is the rest of the message (empty when the channel has no
	// handshake); it aliases the frame.
	Handshake []byte
}

// DecodeOpen decodes an OPEN body (after 00 01).
func DecodeOpen(body []byte) (Open, error) {
	d := compact.NewDecoder(body)
	o := Open{ID: d.Uint(), Protocol: d.String(), Key: d.OptionalBuffer()}
	o.Handshake = d.Rest()
	if err := d.Err(); err != nil {
		return Open{}, fmt.Errorf("%w: open: %w", ErrBadFrame, err)
	}
	return o, nil
}

// DecodeID decodes a REJECT or CLOSE body: one uint. Trailing bytes are
// ignored, as by the reference.
func DecodeID(body []byte) (uint64, error) {
	d := compact.NewDecoder(body)
	id := d.Uint()
	if err := d.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadFrame, err)
	}
	return id, nil
}
