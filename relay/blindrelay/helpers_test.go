package blindrelay

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/protomux"
	"github.com/keytunnel/keytunnel/secretstream"
	"github.com/keytunnel/keytunnel/udx"
)

// listenUDP binds a loopback UDP socket (tests only ever bind 127.0.0.1).
func listenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// newSocket wraps pc in a udx Socket with its own instance, closed when
// the test ends.
func newSocket(t testing.TB, pc net.PacketConn) *udx.Socket {
	t.Helper()
	s, err := udx.NewSocket(pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func loopbackSocket(t testing.TB) *udx.Socket { return newSocket(t, listenUDP(t)) }

func addrOf(s *udx.Socket) netip.AddrPort { return s.LocalAddr().(*net.UDPAddr).AddrPort() }

var nextStreamID atomic.Uint32

func init() { nextStreamID.Store(1000) }

// newStream makes a stream with a fresh id; the test's cleanup destroys it.
func newStream(t testing.TB, s *udx.Socket) *udx.Stream {
	t.Helper()
	st, err := s.NewStream(nextStreamID.Add(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Destroy() })
	return st
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newToken(t testing.TB) Token {
	var tok Token
	if _, err := rand.Read(tok[:]); err != nil {
		t.Fatal(err)
	}
	return tok
}

// dialUDX connects a udx stream on peerSock to a new stream on relaySock
// (ids exchanged out of band, as a DHT connect would) and returns both.
func dialUDX(t testing.TB, peerSock, relaySock *udx.Socket) (peer, relay *udx.Stream) {
	t.Helper()
	peer, relay = newStream(t, peerSock), newStream(t, relaySock)
	if err := peer.Connect(peerSock, relay.ID(), addrOf(relaySock)); err != nil {
		t.Fatal(err)
	}
	if err := relay.Connect(relaySock, peer.ID(), addrOf(peerSock)); err != nil {
		t.Fatal(err)
	}
	return peer, relay
}

// secretPair runs the XX handshake of two secret-streams over a and b.
func secretPair(t testing.TB, a, b secretstream.RawConn, kpA key.KeyPair) (*secretstream.Conn, *secretstream.Conn) {
	t.Helper()
	ca, err := secretstream.Client(a, secretstream.Options{KeyPair: kpA})
	if err != nil {
		t.Fatal(err)
	}
	cb, err := secretstream.Server(b, secretstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	errc := make(chan error, 1)
	go func() { errc <- cb.Handshake(ctx) }()
	if err := ca.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return ca, cb
}

func genKey(t testing.TB) key.KeyPair {
	kp, err := key.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// peer is one side's connection to a relay: its socket, the udx stream
// and secret-stream to the relay, its Mux and its Client.
type peer struct {
	sock   *udx.Socket
	kp     key.KeyPair
	conn   *udx.Stream
	mux    *protomux.Mux
	client *Client
}

// relayAddr is where the relayed stream goes: the relay end of conn.
func (p *peer) relayAddr() netip.AddrPort { return p.conn.RemoteAddr().(*net.UDPAddr).AddrPort() }

// connectGo connects a new peer to a Go Server listening on relaySock.
func connectGo(t testing.TB, srv *Server, relaySock *udx.Socket) *peer {
	t.Helper()
	p, err := connectGoFrom(t, srv, relaySock, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// connectGoFrom is connectGo with the session counted under source src
// (its loopback address if src is the zero Addr); it returns Accept's
// error.
func connectGoFrom(t testing.TB, srv *Server, relaySock *udx.Socket, src netip.Addr) (*peer, error) {
	t.Helper()
	p := &peer{sock: loopbackSocket(t), kp: genKey(t)}
	pc, rc := dialUDX(t, p.sock, relaySock)
	p.conn = pc
	cs, ss := secretPair(t, pc, rc, p.kp)
	rpk := ss.RemotePublicKey()
	smux, err := StartMux(protomux.SecretStream(ss), protomux.Options{}, func(m *protomux.Mux) error {
		_, err := srv.Accept(m, AcceptOptions{ID: rpk[:], RemoteAddr: addrOf(p.sock), Source: src})
		return err
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { smux.Close() })
	p.startClient(t, cs)
	return p, nil
}

func (p *peer) startClient(t testing.TB, cs *secretstream.Conn) {
	t.Helper()
	var err error
	p.mux, err = StartMux(protomux.SecretStream(cs), protomux.Options{}, func(m *protomux.Mux) error {
		var err error
		p.client, err = NewClient(m, p.kp.Public[:])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.client.Close(); p.mux.Close() })
}

// relayed asks the relay to pair a new raw stream of p with token and
// connects it to the relay stream it was given. The raw stream sends
// udx heartbeats so that the relay learns its address even while this
// side has nothing to say (the XX responder speaks second).
func (p *peer) relayed(ctx context.Context, t testing.TB, isInitiator bool, tok Token) (*udx.Stream, error) {
	raw := newStream(t, p.sock)
	id, err := p.client.Pair(ctx, isInitiator, tok, raw)
	if err != nil {
		return nil, err
	}
	if err := raw.Connect(p.sock, id, p.relayAddr()); err != nil {
		return nil, err
	}
	if err := raw.SetKeepalive(50 * time.Millisecond); err != nil {
		return nil, err
	}
	return raw, nil
}

// pairBoth pairs a (initiator) and b through their relays concurrently.
func pairBoth(t testing.TB, a, b *peer, tok Token) (*udx.Stream, *udx.Stream) {
	t.Helper()
	ctx := testCtx(t, 15*time.Second)
	var rb *udx.Stream
	var errB error
	done := make(chan struct{})
	go func() { defer close(done); rb, errB = b.relayed(ctx, t, false, tok) }()
	ra, errA := a.relayed(ctx, t, true, tok)
	<-done
	if errA != nil || errB != nil {
		t.Fatalf("pair: initiator %v, responder %v", errA, errB)
	}
	return ra, rb
}

// marker is a plaintext that every chunk of test data starts with; it
// must never be visible on the relay's socket.
var marker = []byte("KEYTUNNEL-PLAINTEXT-MARKER-3f9a7c")

// markedData returns n bytes of chunks marker ‖ random.
func markedData(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+len(marker) <= n; i += 4096 {
		copy(b[i:], marker)
	}
	return b
}

// exchange sends data each way over a and b at once, half-closes, and
// checks both sides received the other's bytes (SHA-256).
func exchange(t testing.TB, a, b net.Conn, n int, timeout time.Duration) time.Duration {
	t.Helper()
	da, db := markedData(t, n), markedData(t, n)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(c net.Conn, d []byte) {
		defer wg.Done()
		if _, err := c.Write(d); err != nil {
			errs <- fmt.Errorf("write: %w", err)
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	recv := func(c net.Conn, want []byte) {
		defer wg.Done()
		h := sha256.New()
		got, err := io.Copy(h, c)
		if err != nil {
			errs <- fmt.Errorf("read after %d bytes: %w", got, err)
			return
		}
		w := sha256.Sum256(want)
		if s := h.Sum(nil); !bytes.Equal(s, w[:]) {
			errs <- fmt.Errorf("received %d bytes, sha256 %x, want %d bytes %x", got, s, len(want), w)
		}
	}
	a.SetDeadline(time.Now().Add(timeout))
	b.SetDeadline(time.Now().Add(timeout))
	wg.Add(4)
	go send(a, da)
	go send(b, db)
	go recv(a, db)
	go recv(b, da)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return time.Since(start)
}

// tap is a net.PacketConn that watches every datagram the relay receives
// for the plaintext marker.
// With tamper set it plays a malicious relay: it flips one payload byte
// of every udx packet carrying data before the relay forwards it.
type tap struct {
	net.PacketConn
	bytes     atomic.Int64
	sightings atomic.Int64
	tamper    atomic.Bool
	tampered  atomic.Int64
}

func (p *tap) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := p.PacketConn.ReadFrom(b)
	if n > 0 {
		p.bytes.Add(int64(n))
		if bytes.Contains(b[:n], marker) {
			p.sightings.Add(1)
		}
		if p.tamper.Load() && n > udx.HeaderSize+16 && b[0] == 0xff && b[2]&udx.FlagData != 0 {
			b[n-8] ^= 0x40
			p.tampered.Add(1)
		}
	}
	return n, a, err
}

func hexKey(k key.PublicKey) string { return hex.EncodeToString(k[:]) }
