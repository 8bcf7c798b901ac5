package blindrelay

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/compact"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/protomux"
)

func fill32(v byte) (t Token) {
	for i := range t {
		t[i] = v
	}
	return t
}

// samples are the values interop/blindrelay-vectors.js encodes, by name.
var pairSamples = map[string]Pair{
	"pair-initiator-300": {IsInitiator: true, Token: fill32(0xab), ID: 300},
	"pair-responder-5":   {Token: fill32(0xab), ID: 5},
	"pair-id-0":          {Token: fill32(0)},
	"pair-id-fc":         {IsInitiator: true, Token: fill32(1), ID: 0xfc, Seq: 0xfd},
	"pair-id-max32":      {IsInitiator: true, Token: fill32(0xff), ID: 0xffffffff, Seq: 0x10000},
	"pair-id-2^40":       {Token: fill32(0x5a), ID: 1 << 40, Seq: 1},
}

var unpairSamples = map[string]Unpair{
	"unpair":      {Token: fill32(0xab)},
	"unpair-zero": {Token: fill32(0)},
}

type vector struct {
	Kind        string   `json:"kind"`
	Name        string   `json:"name"`
	Msg         string   `json:"msg"`
	Body        string   `json:"body"`
	In          string   `json:"in"`
	OK          bool     `json:"ok"`
	IsInitiator bool     `json:"isInitiator"`
	Token       string   `json:"token"`
	ID          uint64   `json:"id"`
	Seq         uint64   `json:"seq"`
	Frames      []string `json:"frames"`
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	p := nodetest.Start(t, "blindrelay-vectors.js")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var vs []vector
	for {
		l, err := p.Line(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var v vector
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("bad line %q: %v", l, err)
		}
		if v.Kind == "done" {
			return vs
		}
		vs = append(vs, v)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVectors compares the codecs with blind-relay 1.6.1's own: every
// sample encodes to the same bytes, every edge-case body is accepted or
// refused alike and decodes to the same fields, and the frames a real
// Node Client and Server write are the frames this package's channel
// writes.
func TestVectors(t *testing.T) {
	vs := loadVectors(t)
	var enc, dec, frames int
	for _, v := range vs {
		switch v.Kind {
		case "encode":
			enc++
			var got []byte
			switch v.Msg {
			case "pair":
				p, ok := pairSamples[v.Name]
				if !ok {
					t.Fatalf("no Go sample %q", v.Name)
				}
				got = AppendPair(nil, p)
				back, err := DecodePair(got)
				if err != nil || back != p {
					t.Errorf("%s: round trip %+v, %v", v.Name, back, err)
				}
			case "unpair":
				u, ok := unpairSamples[v.Name]
				if !ok {
					t.Fatalf("no Go sample %q", v.Name)
				}
				got = AppendUnpair(nil, u)
				back, err := DecodeUnpair(got)
				if err != nil || back != u {
					t.Errorf("%s: round trip %+v, %v", v.Name, back, err)
				}
			}
			if hex.EncodeToString(got) != v.Body {
				t.Errorf("%s: Go %x, Node %s", v.Name, got, v.Body)
			}
		case "decode":
			dec++
			in := unhex(t, v.In)
			var (
				p   Pair
				err error
			)
			if v.Msg == "pair" {
				p, err = DecodePair(in)
			} else {
				var u Unpair
				u, err = DecodeUnpair(in)
				p = Pair{Token: u.Token}
			}
			if (err == nil) != v.OK {
				t.Errorf("%s %s: Go err %v, Node ok=%v", v.Msg, v.In, err, v.OK)
				continue
			}
			if !v.OK {
				continue
			}
			if p.IsInitiator != v.IsInitiator || hex.EncodeToString(p.Token[:]) != v.Token || p.ID != v.ID || p.Seq != v.Seq {
				t.Errorf("%s %s: Go %+v, Node %+v", v.Msg, v.In, p, v)
			}
		case "frames":
			frames++
			checkFrames(t, v)
		}
	}
	if enc != len(pairSamples)+len(unpairSamples) || dec < 30 || frames != 2 {
		t.Fatalf("only %d encode, %d decode and %d frames vectors", enc, dec, frames)
	}
}

// checkFrames rebuilds the frames the Node Client / Server wrote with
// protomux's frame helpers and this package's codecs.
func checkFrames(t *testing.T, v vector) {
	t.Helper()
	var want [][]byte
	switch v.Name {
	case "client":
		// Channel id 0x11×32 on local channel 1: OPEN, pair, unpair.
		want = [][]byte{
			protomux.AppendOpen(nil, 1, Protocol, bytes.Repeat([]byte{0x11}, 32), nil),
			AppendPair(protomux.AppendMessage(nil, 1, TypePair, nil), Pair{IsInitiator: true, Token: fill32(0xab), ID: 300}),
			AppendUnpair(protomux.AppendMessage(nil, 1, TypeUnpair, nil), Unpair{Token: fill32(0xab)}),
		}
	case "server":
		// Replies go to the non-initiator (slot 0) first, each with the
		// stream the fake createStream handed out for its slot.
		want = [][]byte{
			protomux.AppendOpen(nil, 1, Protocol, bytes.Repeat([]byte{0x22}, 32), nil),
			AppendPair(protomux.AppendMessage(nil, 1, TypePair, nil), Pair{Token: fill32(0xab), ID: 0x1000}),
			AppendPair(protomux.AppendMessage(nil, 1, TypePair, nil), Pair{IsInitiator: true, Token: fill32(0xab), ID: 0x1001}),
		}
	default:
		t.Fatalf("unknown frames vector %q", v.Name)
	}
	if len(v.Frames) != len(want) {
		t.Fatalf("%s: Node wrote %d frames %v, want %d", v.Name, len(v.Frames), v.Frames, len(want))
	}
	for i, f := range v.Frames {
		if f != hex.EncodeToString(want[i]) {
			t.Errorf("%s frame %d: Node %s, Go %x", v.Name, i, f, want[i])
		}
	}
}

// The byte-level examples in the Pair doc comment and the protocol sheet.
func TestDocExamples(t *testing.T) {
	ab := bytes.Repeat([]byte{0xab}, 32)
	cases := []struct {
		got  []byte
		want []byte
	}{
		{AppendPair(nil, Pair{IsInitiator: true, Token: fill32(0xab), ID: 300}), append(append([]byte{1}, ab...), 0xfd, 0x2c, 0x01, 0)},
		{AppendPair(nil, Pair{Token: fill32(0xab), ID: 5}), append(append([]byte{0}, ab...), 5, 0)},
		{AppendUnpair(nil, Unpair{Token: fill32(0xab)}), append([]byte{0}, ab...)},
	}
	for i, c := range cases {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%d: %x, want %x", i, c.got, c.want)
		}
	}
	// Encoders append.
	if b := AppendUnpair([]byte{9}, Unpair{}); b[0] != 9 || len(b) != 34 {
		t.Fatalf("AppendUnpair does not append: %x", b)
	}
	if _, err := DecodePair(nil); !errorsIs(err, ErrMalformed) || !errorsIs(err, compact.ErrShort) {
		t.Fatalf("empty pair: %v", err)
	}
}
