package rpc

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func FuzzDecodeRequest(f *testing.F) {
	for name, v := range goVectors() {
		if name[:3] == "req" || name == "relay" {
			f.Add(v)
		}
	}
	f.Add([]byte{0x03, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeRequest(b)
		if err != nil {
			return
		}
		enc := AppendRequest(nil, m)
		m2, err := DecodeRequest(enc)
		if err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if !bytes.Equal(AppendRequest(nil, m2), enc) {
			t.Fatalf("request does not round-trip")
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	for name, v := range goVectors() {
		if name[:3] == "res" {
			f.Add(v)
		}
	}
	f.Add([]byte{0x13, 0x04, 0, 0, 1, 2, 3, 4, 5, 6, 0xfe, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeResponse(b)
		if err != nil {
			return
		}
		enc := AppendResponse(nil, m)
		m2, err := DecodeResponse(enc)
		if err != nil {
			t.Fatalf("re-encoded response does not decode: %v", err)
		}
		if !bytes.Equal(AppendResponse(nil, m2), enc) {
			t.Fatalf("response does not round-trip")
		}
	})
}

// rawPeer is a bare UDP socket that speaks to a node by hand.
type rawPeer struct {
	c *net.UDPConn
}

func (p rawPeer) send(t *testing.T, to netip.AddrPort, b []byte) {
	if _, err := p.c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatal(err)
	}
}

func (p rawPeer) recv(timeout time.Duration) ([]byte, bool) {
	p.c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, _, err := p.c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, false
	}
	return buf[:n], true
}

func TestBadInput(t *testing.T) {
	g := startGo(t, Config{NoQuickFirewall: true, Mode: Ephemeral})
	d := g.DHT
	waitReady(t, d)
	p := rawPeer{udp(t)}
	me := p.c.LocalAddr().(*net.UDPAddr).AddrPort()

	// Malformed datagrams of every shape: none is answered, none panics.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		b := make([]byte, rng.IntN(80))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if len(b) > 0 {
			b[0] = []byte{0x03, 0x13, 0xff}[i%3]
		}
		if i%3 == 0 && len(b) > 2 {
			b[1] |= 0x10 // claim a value that is not there
			b = b[:min(len(b), 12)]
		}
		p.send(t, g.addr, b)
	}
	// Truncations of a valid request are dropped silently.
	valid := AppendRequest(nil, &RequestMessage{TID: 7, To: g.addr, Internal: true, Command: CmdFindNode, Target: repID(1)})
	for i := 1; i < len(valid); i++ {
		p.send(t, g.addr, valid[:i])
	}
	for {
		b, ok := p.recv(300 * time.Millisecond)
		if !ok {
			break
		}
		// Random bytes can form a valid request; its reply is fine, but
		// nothing else may come back.
		if b[0] != typeReply {
			t.Fatalf("unexpected datagram %x", b)
		}
	}
	// The node still works.
	p.send(t, g.addr, AppendRequest(nil, &RequestMessage{TID: 99, To: g.addr, Internal: true, Command: CmdPing}))
	b, ok := p.recv(2 * time.Second)
	if !ok {
		t.Fatal("no pong after malformed input")
	}
	res, err := DecodeResponse(b)
	if err != nil || res.TID != 99 || res.To != me {
		t.Fatalf("pong %x: %v", b, err)
	}
	st, _ := d.Stats(context.Background())
	if st.Malformed == 0 {
		t.Error("no malformed datagram counted")
	}

	// A wrong token gets INVALID_TOKEN and a fresh token, and the request is
	// not dispatched; the fresh token then works.
	p.send(t, g.addr, AppendRequest(nil, &RequestMessage{TID: 5, To: g.addr, Token: rep(1), Command: 43, Value: []byte("x")}))
	b, ok = p.recv(2 * time.Second)
	if !ok {
		t.Fatal("no reply to a wrong token")
	}
	res, err = DecodeResponse(b)
	if err != nil || res.Error != CodeInvalidToken || res.Token == nil {
		t.Fatalf("wrong token reply %+v %v", res, err)
	}
	g.mu.Lock()
	if len(g.stored) != 0 {
		t.Fatal("request with a wrong token was dispatched")
	}
	g.mu.Unlock()
	p.send(t, g.addr, AppendRequest(nil, &RequestMessage{TID: 6, To: g.addr, Token: res.Token, Command: 43, Value: []byte("x")}))
	b, _ = p.recv(2 * time.Second)
	if res, err := DecodeResponse(b); err != nil || res.Error != 0 || res.TID != 6 {
		t.Fatalf("good token reply %+v %v", res, err)
	}

	// Replies nobody asked for are ignored.
	for i := range 100 {
		p.send(t, g.addr, AppendResponse(nil, &ResponseMessage{TID: uint16(i), To: me, CloserNodes: []netip.AddrPort{me}}))
	}

	// A flood from one address is cut to the rate limit, and another
	// address is still served.
	const flood = 5000
	ping := AppendRequest(nil, &RequestMessage{TID: 1, To: g.addr, Internal: true, Command: CmdPing})
	fl := rawPeer{udp(t)}
	fl.c.SetReadBuffer(1 << 20)
	start := time.Now()
	for range flood {
		fl.send(t, g.addr, ping)
	}
	replies := 0
	for {
		if _, ok := fl.recv(300 * time.Millisecond); !ok {
			break
		}
		replies++
	}
	elapsed := time.Since(start).Seconds()
	limit := 200 + int(100*elapsed) + 10
	t.Logf("flood of %d PINGs in %.2fs: %d answered (limit %d)", flood, elapsed, replies, limit)
	if replies > limit || replies == 0 {
		t.Errorf("flood: %d replies, limit %d", replies, limit)
	}
	other := rawPeer{udp(t)}
	other.send(t, g.addr, ping)
	if _, ok := other.recv(2 * time.Second); !ok {
		t.Error("a second address is not served during a flood")
	}
}

// TestRateLimiterBounded checks that a flood from many (spoofed) sources
// costs bounded memory.
func TestRateLimiterBounded(t *testing.T) {
	r := NewRateLimiter(100, 200, 1000)
	now := time.Now()
	allowed := 0
	for i := range 100000 {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1)
		if r.Allow(now, a) {
			allowed++
		}
	}
	if len(r.buckets) > 1000 {
		t.Fatalf("%d buckets", len(r.buckets))
	}
	if allowed > 1000+800 {
		t.Fatalf("%d of 100000 spoofed sources allowed", allowed)
	}
	r.Sweep(now.Add(10 * time.Second))
	if len(r.buckets) != 0 {
		t.Fatalf("sweep left %d buckets", len(r.buckets))
	}
}

// TestCloseReleasesGoroutines starts nodes, runs queries and requests in
// flight, closes everything and checks every goroutine is gone.
func TestCloseReleasesGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newHub()
	var ds []*DHT
	var conns []*memConn
	mk := func(cfg Config) *DHT {
		srv := h.listen(netip.AddrPort{})
		cli := h.listen(netip.AddrPortFrom(srv.addr.Addr(), 5000))
		conns = append(conns, srv, cli)
		if cfg.Bootstrapper.IsValid() {
			cfg.Bootstrapper = srv.addr
		}
		cfg.Conn, cfg.ClientConn = srv, cli
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
		return d
	}
	boot := mk(Config{Bootstrapper: netip.MustParseAddrPort("1.1.1.1:1")})
	waitReady(t, boot)
	for range 8 {
		mk(Config{Bootstrap: []string{serverAddr(boot).String()}, Mode: Persistent})
	}
	waitReady(t, ds...)
	// Work in flight at Close: a query toward dead nodes and a request
	// that will never be answered.
	h.drop = func(from, to netip.AddrPort, b []byte) bool { return to.Addr() == serverAddr(ds[3]).Addr() }
	ctx := context.Background()
	q := ds[1].FindNode(ctx, randomID(), &QueryOptions{Nodes: []netip.AddrPort{serverAddr(ds[3])}})
	errc := make(chan error, 1)
	go func() {
		_, err := ds[2].Ping(ctx, netip.MustParseAddrPort("10.9.9.9:1"))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	for _, d := range ds {
		d.Close()
		d.Close() // idempotent
	}
	if err := q.Wait(ctx); err == nil {
		t.Error("query in flight at Close ended without error")
	}
	if err := <-errc; err != ErrClosed {
		t.Errorf("request in flight at Close: %v", err)
	}
	if _, err := ds[0].Ping(ctx, serverAddr(ds[1])); err != ErrClosed {
		t.Errorf("Ping after Close: %v", err)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after Close:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
