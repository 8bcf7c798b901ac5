package protomux

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rawMux is a Mux whose peer is driven by hand through the other pipe end.
type rawMux struct {
	t    *testing.T
	m    *Mux
	peer Framed
}

func newRawMux(t *testing.T) *rawMux {
	a, b := Pipe()
	m := New(a, Options{})
	t.Cleanup(func() { m.Close() })
	return &rawMux{t: t, m: m, peer: b}
}

// frames flushes and closes the mux and returns every frame it wrote, hex.
func (r *rawMux) frames() []string {
	r.t.Helper()
	if err := r.m.Flush(testCtx(r.t)); err != nil {
		r.t.Fatalf("flush: %v", err)
	}
	r.m.Close()
	var out []string
	for {
		f, err := r.peer.ReadMessage()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, hex.EncodeToString(f))
	}
}

func (r *rawMux) inject(h string) {
	r.t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.m.inject(testCtx(r.t), b); err != nil {
		r.t.Fatalf("inject %s: %v", h, err)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
