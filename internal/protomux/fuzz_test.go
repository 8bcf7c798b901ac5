package protomux

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// frameSeeds are frames made by this package's encoders: every control
// message, channel messages, and BATCH frames that switch channels, hold
// control entries and nest.
func frameSeeds() [][]byte {
	var bt Batch
	bt.Add(1, AppendMessage(nil, 0, 0, []byte{5})[1:])
	bt.Add(1, AppendMessage(nil, 0, 1, []byte("hi"))[1:])
	bt.Add(0, AppendOpen(nil, 2, "p", []byte("id"), nil)[1:])
	bt.Add(2, AppendMessage(nil, 0, 0, nil)[1:])
	bt.Add(0, AppendClose(nil, 1)[1:])
	batch := slices.Clone(bt.Bytes())
	var inner Batch
	inner.Add(0, batch[1:]) // a BATCH inside a BATCH
	return [][]byte{
		AppendOpen(nil, 1, "a", nil, []byte{7}),
		AppendOpen(nil, 2, "p", bytes.Repeat([]byte{0x11}, 32), nil),
		AppendOpen(nil, 300, "blind-relay", nil, nil),
		AppendReject(nil, 1),
		AppendClose(nil, 1),
		AppendMessage(nil, 1, 0, []byte{0xfd, 0x00, 0x01}),
		AppendMessage(nil, 2, 0, []byte{3, 'a', 'b', 'c'}),
		AppendMessage(nil, 0x10000, 9, nil),
		batch,
		inner.Bytes(),
	}
}

// FuzzParseFrame: ParseFrame never panics, refuses only with ErrBadFrame,
// and what it accepts re-encodes (one message plainly, several as a
// BATCH) to a frame that parses to the same messages.
func FuzzParseFrame(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	f.Add(mustHex(f, nestedBatches(9)))
	f.Add(mustHex(f, nestedBatches(7)))
	f.Fuzz(func(t *testing.T, frame []byte) {
		msgs, batched, err := ParseFrame(frame)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		if batched != (len(msgs) > 1) {
			t.Fatalf("batched %v with %d messages", batched, len(msgs))
		}
		var re []byte
		switch len(msgs) {
		case 0:
		case 1:
			re = AppendMessage(nil, msgs[0].Channel, msgs[0].Type, msgs[0].Body)
		default:
			var bt Batch
			for _, m := range msgs {
				bt.Add(m.Channel, AppendMessage(nil, 0, m.Type, m.Body)[1:])
			}
			re = bt.Bytes()
		}
		got, _, err := ParseFrame(re)
		if err != nil {
			t.Fatalf("re-encoding %x of %x does not parse: %v", re, frame, err)
		}
		if !equalMsgs(got, msgs) {
			t.Fatalf("%x parsed to %v, its re-encoding %x to %v", frame, msgs, re, got)
		}
		// Control bodies go through their own decoders in the Mux; they
		// must not panic on whatever a frame carries.
		for _, m := range msgs {
			if m.Channel == 0 {
				DecodeOpen(m.Body)
				DecodeID(m.Body)
			}
		}
	})
}

func equalMsgs(a, b []Msg) bool {
	return slices.EqualFunc(a, b, func(x, y Msg) bool {
		return x.Channel == y.Channel && x.Type == y.Type && bytes.Equal(x.Body, y.Body)
	})
}

// FuzzDecodeOpen: an accepted OPEN body re-encodes (AppendOpen) to one
// that decodes to the same Open, and decoding is stable from there.
func FuzzDecodeOpen(f *testing.F) {
	for _, s := range frameSeeds() {
		if len(s) > 2 && s[0] == 0 && s[1] == TypeOpen {
			f.Add(s[2:])
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		o, err := DecodeOpen(body)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		re := AppendOpen(nil, o.ID, o.Protocol, o.Key, o.Handshake)[2:]
		o2, err := DecodeOpen(re)
		if err != nil {
			t.Fatalf("re-encoding %x of %x does not decode: %v", re, body, err)
		}
		if o2.ID != o.ID || o2.Protocol != o.Protocol || !bytes.Equal(o2.Key, o.Key) || !bytes.Equal(o2.Handshake, o.Handshake) {
			t.Fatalf("%x decoded to %+v, its re-encoding to %+v", body, o, o2)
		}
		if o.Key != nil && len(o.Key) == 0 {
			t.Fatalf("empty key not nil")
		}
	})
}

// FuzzMux runs a live Mux (channels opened locally, a pair handler that
// accepts the peer's opens of "p") through a sequence of fuzzed frames,
// each one length byte and that many bytes of frame. The Mux must never
// panic or hang, and when it gives up the error must say why with one of
// its sentinels.
func FuzzMux(f *testing.F) {
	seq := func(frames ...[]byte) []byte {
		var b []byte
		for _, fr := range frames {
			b = append(append(b, byte(len(fr))), fr...)
		}
		return b
	}
	s := frameSeeds()
	f.Add(seq(s...))
	f.Add(seq(AppendOpen(nil, 1, "a", nil, []byte{7}), AppendMessage(nil, 1, 0, []byte{42}), AppendClose(nil, 1)))
	f.Add(seq(AppendOpen(nil, 1, "p", []byte("x"), nil), AppendMessage(nil, 1, 1, []byte{1}), AppendOpen(nil, 2, "q", nil, nil), AppendClose(nil, 2)))
	f.Add(seq(AppendReject(nil, 2), AppendReject(nil, 2)))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := Pipe()
		defer b.Close()
		m := New(a, Options{MaxBacklog: 8, MaxBuffered: 4096})
		defer m.Close()
		ca := m.NewChannel(ChannelOptions{Protocol: "a", Handshake: true})
		AddMessage(ca, Uint{}, nil)
		ca.Open(Uint{}.Append(nil, 7))
		cb := m.NewChannel(ChannelOptions{Protocol: "b"})
		AddMessage(cb, String{}, nil)
		cb.Open(nil)
		m.Pair("p", nil, func(ctx context.Context, id []byte) {
			c := m.NewChannel(ChannelOptions{Protocol: "p", ID: id})
			AddMessage(c, Raw{}, nil)
			AddMessage(c, Uint{}, func(c *Channel, v uint64) {
				if v == 1 {
					c.Close()
				}
			})
			c.Open(nil)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			frame := in[1 : 1+n]
			in = in[1+n:]
			if err := m.inject(ctx, frame); err != nil {
				if ctx.Err() != nil {
					t.Fatalf("mux stuck on frame %x", frame)
				}
				if !errors.Is(err, ErrBadFrame) && !errors.Is(err, ErrInvalidOpen) && !errors.Is(err, ErrInvalidReject) &&
					!errors.Is(err, ErrBacklog) && !errors.Is(err, ErrBadMessage) {
					t.Fatalf("frame %x: error %v wraps no sentinel", frame, err)
				}
				break
			}
		}
		closed := make(chan struct{})
		go func() { m.Close(); close(closed) }()
		select {
		case <-closed:
		case <-ctx.Done():
			t.Fatal("Close did not return")
		}
	})
}
