package protomux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// Vectors printed by interop/protomux-vectors.js (protomux 3.12.1). The
// first three are also the examples of the protocol sheet.
var sheetVectors = map[string][]string{
	"openBlindRelay": {"0001010b626c696e642d72656c617920" + string(bytes.Repeat([]byte("11"), 32))},
	"openNoID":       {"00010115406879706572737761726d2f6468742d72656c617900"},
	"corked":         {"0000000501010178000001020005020006"},
}

// goVectors runs the Node script's scenarios on Go muxes.
func goVectors(t *testing.T) map[string]any {
	out := map[string]any{}

	{
		r := newRawMux(t)
		r.m.NewChannel(ChannelOptions{Protocol: "blind-relay", ID: bytes.Repeat([]byte{0x11}, 32)}).Open(nil)
		out["openBlindRelay"] = r.frames()
	}
	{
		r := newRawMux(t)
		r.m.NewChannel(ChannelOptions{Protocol: "@hyperswarm/dht-relay"}).Open(nil)
		out["openNoID"] = r.frames()
	}
	{
		r := newRawMux(t)
		r.m.Cork()
		ch := r.m.NewChannel(ChannelOptions{Protocol: "x"})
		m := AddMessage(ch, Uint{}, nil)
		ch.Open(nil)
		m.Send(5)
		m.Send(6)
		r.m.Uncork()
		out["corked"] = r.frames()
	}
	{
		r := newRawMux(t)
		ch := r.m.NewChannel(ChannelOptions{Protocol: "p", ID: []byte("abc"), Handshake: true})
		raw := AddMessage(ch, Raw{}, nil)
		num := AddMessage(ch, Uint{}, nil)
		str := AddMessage(ch, String{}, nil)
		ch.Open(Uint{}.Append(nil, 7))
		raw.Send([]byte("hello"))
		num.Send(300)
		str.Send("")
		num.Send(0x10000)
		ch.Close()
		out["messages"] = r.frames()
	}
	{
		r := newRawMux(t)
		r.inject("000101" + "03" + hex.EncodeToString([]byte("foo")) + "00")
		out["reject"] = r.frames()
	}
	{
		r := newRawMux(t)
		open := func(p string) *Channel {
			c := r.m.NewChannel(ChannelOptions{Protocol: p})
			if err := c.Open(nil); err != nil {
				t.Fatal(err)
			}
			return c
		}
		a := open("a")
		b := open("b")
		r.inject("00010101" + hex.EncodeToString([]byte("a")) + "00")
		a.Close()
		open("c")
		b.Close()
		open("d")
		r.inject("000202")
		open("e")
		out["idReuse"] = r.frames()
	}
	{
		r := newRawMux(t)
		a := r.m.NewChannel(ChannelOptions{Protocol: "a"})
		ma := AddMessage(a, Raw{}, nil)
		a.Open(nil)
		b := r.m.NewChannel(ChannelOptions{Protocol: "b"})
		mb := AddMessage(b, Raw{}, nil)
		b.Open(nil)
		r.m.Cork()
		ma.Send([]byte("1"))
		mb.Send([]byte("22"))
		ma.Send([]byte("333"))
		r.m.NewChannel(ChannelOptions{Protocol: "c"}).Open(nil)
		b.Close()
		r.m.Uncork()
		out["batchSwitch"] = r.frames()
	}
	{
		r := newRawMux(t)
		for i := range 300 {
			r.m.NewChannel(ChannelOptions{Protocol: fmt.Sprint("n", i)}).Open(nil)
		}
		f := r.frames()
		out["bigIDs"] = append(slices.Clone(f[251:254]), f[299:]...)
	}
	{
		r := newRawMux(t)
		a := r.m.NewChannel(ChannelOptions{Protocol: "a"})
		ma := AddMessage(a, Raw{}, nil)
		a.Open(nil)
		r.m.Cork()
		for i := range 6 {
			if err := ma.Send(bytes.Repeat([]byte{byte(i)}, 2<<20)); err != nil {
				t.Fatal(err)
			}
		}
		r.m.Uncork()
		var sums []string
		for _, h := range r.frames()[1:] {
			b, _ := hex.DecodeString(h)
			sums = append(sums, fmt.Sprintf("%d:%x", len(b), sha256.Sum256(b)))
		}
		out["bigBatch"] = sums
	}
	{
		r := newRawMux(t)
		var mu sync.Mutex
		var got []string
		add := func(s string) { mu.Lock(); got = append(got, s); mu.Unlock() }
		accept := make(chan struct{})
		r.m.Pair("q", nil, func(ctx context.Context, id []byte) {
			select {
			case <-accept:
			case <-ctx.Done():
			}
		})
		r.inject("00010101" + hex.EncodeToString([]byte("q")) + "00" + "0a0b")
		r.inject("0100" + hex.EncodeToString([]byte("early")))
		r.inject("0105aa")
		ch := r.m.NewChannel(ChannelOptions{Protocol: "q", Handshake: true, OnOpen: func(c *Channel, hs []byte) { add("open:" + hex.EncodeToString(hs)) }})
		AddMessage(ch, Raw{}, func(c *Channel, m []byte) { add("0:" + string(m)) })
		if err := ch.Open(mustHex(t, "ff")); err != nil {
			t.Fatal(err)
		}
		close(accept)
		if ok, err := ch.WaitOpened(testCtx(t)); !ok || err != nil {
			t.Fatalf("WaitOpened: %v %v", ok, err)
		}
		r.inject("0100" + hex.EncodeToString([]byte("late")))
		mu.Lock()
		g := slices.Clone(got)
		mu.Unlock()
		out["received"] = map[string]any{"frames": r.frames(), "got": g}
	}
	return out
}

func TestSheetVectors(t *testing.T) {
	got := goVectors(t)
	for name, want := range sheetVectors {
		if g := got[name].([]string); !slices.Equal(g, want) {
			t.Errorf("%s:\n got %v\nwant %v", name, g, want)
		}
	}
}

func TestNodeVectors(t *testing.T) {
	p := nodetest.Start(t, "protomux-vectors.js")
	line := p.Expect("{", 30*time.Second)
	var want map[string]any
	if err := json.Unmarshal([]byte("{"+line), &want); err != nil {
		t.Fatal(err)
	}
	got := goVectors(t)
	// Compare through JSON so both sides have the same shape.
	gj, _ := json.Marshal(got)
	var g map[string]any
	json.Unmarshal(gj, &g)
	if len(want) != len(g) {
		t.Errorf("scenario count: Node %d, Go %d", len(want), len(g))
	}
	for name, w := range want {
		wj, _ := json.Marshal(w)
		gj, _ := json.Marshal(g[name])
		if !bytes.Equal(wj, gj) {
			t.Errorf("%s:\n  Go %s\nNode %s", name, gj, wj)
		}
	}
}
