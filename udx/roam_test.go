package udx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/vnet"
)

// rebindingNAT stands between a client and a server: the client sends to
// inside, the NAT sends on to the server from its current mapping (a
// socket of its own) and passes the server's answers to that mapping
// back. Rebind opens a new mapping and closes the old one, so the server
// sees the client's packets come from a new address and its packets to
// the old one vanish, as when a NAT loses its state.
type rebindingNAT struct {
	t      testing.TB
	listen func() net.PacketConn
	inside net.PacketConn
	server netip.AddrPort
	wg     sync.WaitGroup

	dark   atomic.Bool // drop everything, both ways
	darkUp atomic.Bool // drop what the client sends

	mu     sync.Mutex
	out    net.PacketConn
	client netip.AddrPort
}

// newRebindingNAT starts a NAT in front of server whose sockets listen
// opens (on loopback, or on a vnet).
func newRebindingNAT(t testing.TB, server netip.AddrPort, listen func() net.PacketConn) *rebindingNAT {
	n := &rebindingNAT{t: t, listen: listen, inside: listen(), server: server}
	n.Rebind()
	n.pump(n.inside, &n.darkUp, func(from netip.AddrPort) (net.PacketConn, netip.AddrPort) {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.client = from
		return n.out, n.server
	})
	t.Cleanup(n.Close)
	return n
}

// Close stops the NAT and waits for its goroutines.
func (n *rebindingNAT) Close() {
	n.inside.Close()
	n.mu.Lock()
	n.out.Close()
	n.mu.Unlock()
	n.wg.Wait()
}

// pump copies what src reads to where dst says, except while dark (or
// drop), until src is closed.
func (n *rebindingNAT) pump(src net.PacketConn, drop *atomic.Bool, dst func(from netip.AddrPort) (net.PacketConn, netip.AddrPort)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		buf := make([]byte, 2048)
		for {
			k, from, err := src.ReadFrom(buf)
			if err != nil {
				return
			}
			if n.dark.Load() || (drop != nil && drop.Load()) {
				continue
			}
			c, to := dst(from.(*net.UDPAddr).AddrPort())
			c.WriteTo(buf[:k], net.UDPAddrFromAddrPort(to))
		}
	}()
}

// Addr is where the client sends.
func (n *rebindingNAT) Addr() netip.AddrPort {
	return n.inside.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Mapping is the address the server sees the client at.
func (n *rebindingNAT) Mapping() netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.out.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Rebind replaces the mapping.
func (n *rebindingNAT) Rebind() {
	out := n.listen()
	n.mu.Lock()
	old := n.out
	n.out = out
	n.mu.Unlock()
	if old != nil {
		old.Close()
	}
	n.pump(out, nil, func(netip.AddrPort) (net.PacketConn, netip.AddrPort) {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.inside, n.client
	})
}

func roamFirewall(*Stream, *Socket, netip.AddrPort) FirewallVerdict { return FirewallRoam }

// roamPair connects a client stream (id 1) on sc through a rebindingNAT
// to a server stream (id 2) on ss whose firewall lets it roam; both time
// out after timeout (StreamOptions.Timeout).
func roamPair(t *testing.T, sc, ss *Socket, timeout time.Duration, listen func() net.PacketConn) (cl, srv *Stream, nat *rebindingNAT) {
	t.Helper()
	nat = newRebindingNAT(t, addrOf(ss), listen)
	cl, _ = sc.NewStream(1, &StreamOptions{Timeout: timeout})
	srv, _ = ss.NewStream(2, &StreamOptions{Firewall: roamFirewall, Timeout: timeout})
	if err := cl.Connect(sc, 2, nat.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Connect(ss, 1, nat.Mapping()); err != nil {
		t.Fatal(err)
	}
	return cl, srv, nat
}

// loopbackRoamPair is roamPair on loopback UDP sockets.
func loopbackRoamPair(t *testing.T, timeout time.Duration) (cl, srv *Stream, nat *rebindingNAT) {
	return roamPair(t, udpSocket(t), udpSocket(t), timeout, func() net.PacketConn { return mustUDP(t) })
}

// vnetRoamPair is roamPair on a virtual network with cfg's links; it
// also returns a listener for more endpoints (a spoofer).
func vnetRoamPair(t *testing.T, cfg vnet.Config) (cl, srv *Stream, nat *rebindingNAT, listen func() net.PacketConn) {
	t.Helper()
	nw := vnet.New(cfg)
	t.Cleanup(func() { nw.Close() })
	listen = func() net.PacketConn {
		c, err := nw.Listen(addrZero)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	sock := func() *Socket {
		s, err := NewSocket(listen())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	cl, srv, nat = roamPair(t, sock(), sock(), 0, listen)
	return cl, srv, nat, listen
}

// vouch is the layer above a stream for these tests, standing in for
// secret-stream's MACs: it reads everything s receives, checks it
// against the n pattern bytes the peer sends (seed), and passes each
// complete chunk that matches to Authenticated. Bytes that do not match
// are never vouched for (and fail it).
func vouch(s *Stream, seed uint64, n int64, chunk int) (int64, error) {
	want := newPattern(seed, n)
	buf := make([]byte, chunk)
	exp := make([]byte, chunk)
	var off int64
	for {
		k, err := io.ReadFull(s, buf)
		if k > 0 {
			if m, _ := io.ReadFull(want, exp[:k]); m != k || !bytes.Equal(buf[:k], exp[:k]) {
				return off, fmt.Errorf("bytes %d-%d are not what the peer sent", off, off+int64(k))
			}
			off += int64(k)
			s.Authenticated(off)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if off != n {
				return off, fmt.Errorf("got %d bytes, want %d", off, n)
			}
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// vouchedTransfer sends n pattern bytes each way between a and b at
// once; each side's reader vouches for them in chunks (vouch). It fails
// the test unless all arrive intact within limit.
func vouchedTransfer(t *testing.T, a, b *Stream, n int64, chunk int, limit time.Duration) {
	t.Helper()
	errc := make(chan error, 4)
	go func() { _, err := sendAll(a, 1, n); errc <- err }()
	go func() { _, err := sendAll(b, 2, n); errc <- err }()
	go func() { _, err := vouch(b, 1, n, chunk); errc <- err }()
	go func() { _, err := vouch(a, 2, n, chunk); errc <- err }()
	to := time.After(limit)
	for range 4 {
		select {
		case err := <-errc:
			if err != nil {
				// Both streams' state, for a failure CI sees once.
				t.Fatalf("%v (a=%+v b=%+v)", err, a.Stats(), b.Stats())
			}
		case <-to:
			t.Fatalf("transfer of %d bytes each way did not finish in %v (a=%+v b=%+v)", n, limit, a.Stats(), b.Stats())
		}
	}
}

// waitFor polls cond every millisecond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

func remoteOf(s *Stream) netip.AddrPort { return s.RemoteAddr().(*net.UDPAddr).AddrPort() }

// The client's NAT mapping changes twice in the middle of a transfer in
// both directions, on loopback: the server's stream follows the client to
// each new port (Roams) once the bytes from there are vouched for in
// 64 KiB chunks, like secret-stream's largest messages, and every byte
// arrives once, in order, both ways. A chunk takes 56 packets, more than
// a congestion window holds without ACKs: the client completes one only
// because the server acknowledges its data to the candidate address too.
func TestRoamFollowsRebinding(t *testing.T) {
	cl, srv, nat := loopbackRoamPair(t, 0)
	const n = 48 << 20
	rebound := make(chan []netip.AddrPort, 1)
	var took []time.Duration // from each rebinding to the move
	go func() {
		var maps []netip.AddrPort
		defer func() { rebound <- maps }()
		for i, at := range []uint64{3000, 12000} {
			for srv.Stats().PacketsReceived < at {
				select {
				case <-srv.Done():
					return
				case <-time.After(time.Millisecond):
				}
			}
			nat.Rebind()
			maps = append(maps, nat.Mapping())
			start := time.Now()
			if waitFor(10*time.Second, func() bool { return srv.Stats().Roams > uint64(i) }) {
				took = append(took, time.Since(start))
			}
		}
	}()
	start := time.Now()
	vouchedTransfer(t, cl, srv, n, 256<<10, 60*time.Second)
	maps := <-rebound
	st := srv.Stats()
	t.Logf("%d MiB each way across %d rebindings in %v, moved %v after them; server %+v", n>>20, len(maps), time.Since(start).Round(time.Millisecond), took, st)
	if len(maps) != 2 {
		t.Fatalf("the transfer ended before both rebindings (%d)", len(maps))
	}
	for _, d := range took {
		if d > time.Second {
			t.Errorf("the server moved %v after a rebinding, want within 1 s", d)
		}
	}
	if st.Roams != 2 {
		t.Fatalf("server stream roamed %d times, want 2", st.Roams)
	}
	if got := remoteOf(srv); got != maps[1] {
		t.Fatalf("server sends to %v, the client's mapping is %v", got, maps[1])
	}
}

// On a virtual network: packets with the stream's id from another
// address never move the stream unless bytes that came in them are
// authenticated. Pure ACKs (with news or without), heartbeats, replays,
// packets that do not fit the windows, and fitting new data that is not
// authenticated leave it where it is; the client's authenticated data
// from a new mapping moves it, exactly when the authenticated offset
// passes the first byte from there. No goroutine outlives the test.
func TestRoamNeedsAuthentication(t *testing.T) {
	done := checkNoLeak(t)
	t.Run("", func(t *testing.T) { roamNeedsAuthentication(t) })
	done()
}

func roamNeedsAuthentication(t *testing.T) {
	cl, srv, nat, listen := vnetRoamPair(t, vnet.Config{Delay: 2 * time.Millisecond})
	// The server's reader: what it has read, for the test to vouch for.
	var got bytes.Buffer
	var gotMu sync.Mutex
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			k, err := srv.Read(buf)
			gotMu.Lock()
			got.Write(buf[:k])
			gotMu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	defer func() { cl.Destroy(); srv.Destroy(); <-readDone }()
	readN := func() int64 {
		gotMu.Lock()
		defer gotMu.Unlock()
		return int64(got.Len())
	}
	write := func(s *Stream, p string) {
		t.Helper()
		if _, err := s.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	// Drain the client's side so that the server's data is acknowledged.
	go io.Copy(io.Discard, cl)

	// The authenticated move: the client's data from a new mapping
	// makes it the candidate; vouching for the bytes before it does
	// nothing, for its first byte moves the stream.
	write(cl, "before")
	if !waitFor(5*time.Second, func() bool { return readN() == 6 }) {
		t.Fatal("the server did not read the client's first bytes")
	}
	srv.Authenticated(6)
	old := nat.Mapping()
	nat.Rebind()
	write(cl, "after")
	if !waitFor(5*time.Second, func() bool { return readN() == 11 }) {
		t.Fatal("the server did not read the client's bytes from its new mapping")
	}
	st := srv.Stats()
	if st.RoamCandidates != 1 || st.Roams != 0 || remoteOf(srv) != old {
		t.Fatalf("before any authentication: %d candidates, %d roams, sending to %v (old mapping %v)", st.RoamCandidates, st.Roams, remoteOf(srv), old)
	}
	srv.Authenticated(6) // again: nothing new
	time.Sleep(20 * time.Millisecond)
	if r := srv.Stats().Roams; r != 0 {
		t.Fatalf("authenticated through the bytes before the candidate's, the stream moved (%d)", r)
	}
	srv.Authenticated(7) // the candidate's first byte
	if !waitFor(time.Second, func() bool { return srv.Stats().Roams == 1 }) || remoteOf(srv) != nat.Mapping() {
		t.Fatalf("the candidate's first byte authenticated: %d roams, sending to %v, want the new mapping %v", srv.Stats().Roams, remoteOf(srv), nat.Mapping())
	}
	peer := nat.Mapping()
	srv.Authenticated(11)

	// Data in flight from the server whose ACKs the client sent but the
	// NAT dropped: a spoofed ACK of it from elsewhere brings news.
	nat.darkUp.Store(true)
	write(srv, "in flight")
	time.Sleep(20 * time.Millisecond)
	var seq, ack, acked uint32
	_ = srv.u.do(func(int64) error {
		seq, ack, acked = srv.seq, srv.ack, srv.remoteAcked
		return nil
	})
	if seq == acked {
		t.Fatal("nothing in flight while the client's ACKs are dropped")
	}

	spoofer := listen()
	defer spoofer.Close()
	send := func(h Header, payload []byte) {
		// A full window: a spoofed zero window would stall the stream
		// (as in libudx), which is not what this test is about.
		h.ID, h.RWnd = 2, defaultRwndMax
		b := make([]byte, HeaderSize+len(payload))
		h.Put(b)
		copy(b[HeaderSize:], payload)
		if _, err := spoofer.WriteTo(b, net.UDPAddrFromAddrPort(addrOf(srv.sock))); err != nil {
			t.Fatal(err)
		}
	}
	cands := srv.Stats().RoamCandidates
	for _, c := range []struct {
		name      string
		h         Header
		payload   []byte
		candidate bool // fits and brings news
	}{
		{"ack with no news", Header{Seq: ack, Ack: acked}, nil, false},
		{"heartbeat", Header{Type: FlagHeartbeat, Seq: ack, Ack: acked}, nil, false},
		{"replayed data", Header{Type: FlagData, Seq: ack - 1, Ack: acked}, []byte("r"), false},
		{"ack of unsent data", Header{Seq: ack, Ack: seq + 5}, nil, false},
		{"ack from the past", Header{Seq: ack, Ack: acked - 7}, nil, false},
		{"data beyond the window", Header{Type: FlagData, Seq: ack + oooCap + 1, Ack: acked}, []byte("far"), false},
		{"ack with news", Header{Seq: ack, Ack: seq}, nil, true},
	} {
		send(c.h, c.payload)
		time.Sleep(20 * time.Millisecond)
		if c.candidate {
			cands++
		}
		st := srv.Stats()
		if st.Roams != 1 || st.RoamCandidates != cands {
			t.Fatalf("%s: %d roams (want 1), %d candidates (want %d)", c.name, st.Roams, st.RoamCandidates, cands)
		}
		srv.Authenticated(readN()) // all the client's bytes so far
		time.Sleep(5 * time.Millisecond)
		if r, to := srv.Stats().Roams, remoteOf(srv); r != 1 || to != peer {
			t.Fatalf("%s, then the client's bytes authenticated: %d roams, sending to %v, want 1 and %v", c.name, r, to, peer)
		}
	}
	nat.darkUp.Store(false)
	if srv.Err() != nil {
		t.Fatalf("the stream died: %v", srv.Err())
	}

	// Fitting new data from the spoofer is delivered (libudx takes it
	// from any address on the socket) but never authenticated: the
	// stream stays. Were it authenticated, it would move.
	before := readN()
	send(Header{Type: FlagData, Seq: ack, Ack: seq}, []byte("evil"))
	if !waitFor(time.Second, func() bool { return readN() == before+4 }) {
		t.Fatal("the spoofed data was not delivered")
	}
	srv.Authenticated(before)
	time.Sleep(20 * time.Millisecond)
	if r, to := srv.Stats().Roams, remoteOf(srv); r != 1 || to != peer {
		t.Fatalf("unauthenticated data from a spoofer: %d roams, sending to %v", r, to)
	}
	srv.Authenticated(before + 1)
	if !waitFor(time.Second, func() bool { return remoteOf(srv) != peer }) {
		t.Fatal("authenticating the spoofer's byte did not move the stream: the test above proves nothing")
	}
}

// A newer candidate replaces an older one: bytes from the first new
// mapping that were not authenticated before the second appeared no
// longer count, and once everything is authenticated the stream is at
// the newest mapping, having moved once.
func TestRoamCandidateReplaced(t *testing.T) {
	cl, srv, nat, _ := vnetRoamPair(t, vnet.Config{Delay: time.Millisecond})
	var n atomic.Int64
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := srv.Read(buf)
			n.Add(int64(k))
			if err != nil {
				return
			}
		}
	}()
	sendRead := func(p string, total int64) {
		t.Helper()
		if _, err := cl.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
		if !waitFor(5*time.Second, func() bool { return n.Load() == total }) {
			t.Fatalf("the server read %d bytes, want %d", n.Load(), total)
		}
	}
	sendRead("first", 5)
	nat.Rebind()
	a := nat.Mapping()
	sendRead("from a", 11)
	nat.Rebind()
	b := nat.Mapping()
	sendRead("from b", 17)
	st := srv.Stats()
	if st.RoamCandidates != 2 || st.Roams != 0 {
		t.Fatalf("%d candidates, %d roams; want 2 and 0", st.RoamCandidates, st.Roams)
	}
	srv.Authenticated(11) // all of a's bytes, none of b's
	time.Sleep(20 * time.Millisecond)
	if r, to := srv.Stats().Roams, remoteOf(srv); r != 0 {
		t.Fatalf("a's bytes authenticated after b replaced it: %d roams, sending to %v (a %v, b %v)", r, to, a, b)
	}
	srv.Authenticated(17)
	if !waitFor(time.Second, func() bool { return srv.Stats().Roams == 1 }) || remoteOf(srv) != b {
		t.Fatalf("b's bytes authenticated: %d roams, sending to %v, want 1 and %v", srv.Stats().Roams, remoteOf(srv), b)
	}
	// And the path works: the server's data reaches the client.
	if _, err := srv.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(cl, buf); err != nil || string(buf) != "back" {
		t.Fatalf("the client read %q, %v", buf, err)
	}
}

// A client that only downloads sends nothing but ACKs, which carry
// nothing to authenticate. After its mapping changes mid-download, its
// stream sees the data stop and calls its receive-stall hook; the layer
// above answers with a few bytes of its own, which moves the server once
// authenticated (within 2 s of the change), and the download finishes.
// Without the hook the server stays at the old mapping.
func TestRoamDownloadStallHook(t *testing.T) {
	for _, hook := range []bool{true, false} {
		t.Run(fmt.Sprintf("hook=%v", hook), func(t *testing.T) {
			// 4 MB/s, 10 ms each way: the download takes 2 s.
			cl, srv, nat, _ := vnetRoamPair(t, vnet.Config{Delay: 10 * time.Millisecond, Rate: 4e6, QueueLimit: 50 * time.Millisecond})
			const n = 8 << 20
			const ka = 1 // bytes per keepalive
			kick := make(chan struct{}, 1)
			stop := make(chan struct{})
			var sent atomic.Int64
			go func() {
				for {
					select {
					case <-kick:
						if _, err := cl.Write([]byte{'k'}); err == nil {
							sent.Add(ka)
						}
					case <-stop:
						return
					}
				}
			}()
			defer close(stop)
			if hook {
				cl.OnReceiveStall(func() {
					select {
					case kick <- struct{}{}:
					default:
					}
				})
			}
			// The server vouches for the client's keepalives.
			go func() {
				var off int64
				buf := make([]byte, 64)
				for {
					k, err := srv.Read(buf)
					if bytes.Count(buf[:k], []byte{'k'}) == k {
						off += int64(k)
						srv.Authenticated(off)
					}
					if err != nil {
						return
					}
				}
			}()
			// The client speaks first, so that the NAT knows where it is.
			kick <- struct{}{}
			if !waitFor(5*time.Second, func() bool { return srv.Stats().PacketsReceived > 0 }) {
				t.Fatal("the client's first packet did not arrive")
			}
			errc := make(chan error, 2)
			go func() { _, err := sendAll(srv, 3, n); errc <- err }()
			got := make(chan int64, 1)
			go func() { _, k, _ := recvAll(cl); got <- k }()
			if !waitFor(5*time.Second, func() bool { return srv.Stats().PacketsSent > 1000 }) {
				t.Fatalf("the download did not start: client %+v, server %+v", cl.Stats(), srv.Stats())
			}
			nat.Rebind()
			moved := time.Now()
			if !hook {
				time.Sleep(1500 * time.Millisecond)
				if st := srv.Stats(); st.Roams != 0 {
					t.Fatalf("the server moved without the client's authenticated data: %+v", st)
				}
				return
			}
			if !waitFor(2*time.Second, func() bool { return srv.Stats().Roams > 0 }) {
				t.Fatalf("the server did not move within 2 s of the rebinding: client %+v, server %+v", cl.Stats(), srv.Stats())
			}
			took := time.Since(moved)
			select {
			case k := <-got:
				if k != n {
					t.Fatalf("downloaded %d bytes, want %d", k, n)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the download did not finish: client %+v, server %+v", cl.Stats(), srv.Stats())
			}
			st, cst := srv.Stats(), cl.Stats()
			t.Logf("server moved %v after the rebinding; server %+v; client stalls %d, keepalive bytes %d", took.Round(time.Millisecond), st, cst.RecvStalls, sent.Load())
			if st.Roams != 1 || remoteOf(srv) != nat.Mapping() {
				t.Fatalf("server roamed %d times to %v, want once to %v", st.Roams, remoteOf(srv), nat.Mapping())
			}
			if cst.RecvStalls == 0 {
				t.Fatal("the client's stall hook never ran")
			}
		})
	}
}

// The receive-stall hook runs once when a flow of data stops, not for a
// lone packet (a keystroke's echo), not again while nothing comes, and
// not after the peer's END.
func TestReceiveStallHook(t *testing.T) {
	sa, sb := vnetPair(t, vnet.Config{Delay: 5 * time.Millisecond})
	a, b := pair(t, sa, sb, 1, 2)
	var calls atomic.Int32
	b.OnReceiveStall(func() { calls.Add(1) })
	go io.Copy(io.Discard, b)
	check := func(what string, want int32) {
		t.Helper()
		time.Sleep(400 * time.Millisecond) // well past the 200 ms stall time
		if c := calls.Load(); c != want {
			t.Fatalf("%s: the hook ran %d times, want %d", what, c, want)
		}
	}
	a.Write([]byte("x"))
	check("a lone packet", 0)
	a.Write(make([]byte, 64<<10))
	check("a flow that stopped", 1)
	check("still nothing", 1)
	a.Write(make([]byte, 64<<10))
	a.CloseWrite()
	check("a flow that ended", 1)
	if st := b.Stats(); st.RecvStalls != 1 {
		t.Fatalf("RecvStalls %d, want 1", st.RecvStalls)
	}
}

// A link that goes dark for 15 s in the middle of a transfer both ways:
// streams with a 25 s Timeout keep retransmitting and finish with every
// byte once; streams with libudx's six RTOs (Timeout 0), beside them on
// a link dark just as long, time out (about 13 s).
func TestTimeoutRidesOutDarkLink(t *testing.T) {
	type run struct {
		cl, srv *Stream
		nat     *rebindingNAT
	}
	var long, short run
	long.cl, long.srv, long.nat = loopbackRoamPair(t, 25*time.Second)
	short.cl, short.srv, short.nat = loopbackRoamPair(t, 25*time.Second)
	// Back to libudx's six RTOs, as a relayed dht connection keeps them.
	for _, st := range []*Stream{short.cl, short.srv} {
		if err := st.SetTimeout(0); err != nil {
			t.Fatal(err)
		}
	}
	const n = 4 << 20
	// The short pair carries on without end until it dies.
	go func() { sendAll(short.cl, 3, 1<<40) }()
	go func() { recvAll(short.srv) }()
	go func() {
		for long.srv.Stats().PacketsReceived < 500 {
			time.Sleep(time.Millisecond)
		}
		long.nat.dark.Store(true)
		short.nat.dark.Store(true)
		time.Sleep(15 * time.Second)
		long.nat.dark.Store(false)
		short.nat.dark.Store(false)
	}()
	start := time.Now()
	transfer(t, long.cl, long.srv, n, 60*time.Second)
	t.Logf("%d MiB each way across 15 s of darkness in %v; server %+v", n>>20, time.Since(start).Round(time.Millisecond), long.srv.Stats())
	select {
	case <-short.cl.Done():
		if err := short.cl.Err(); !errors.Is(err, ErrTimeout) {
			t.Fatalf("the six-RTO stream ended with %v, want ErrTimeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stream with Timeout 0 survived 15 s of darkness: the test proves nothing")
	}
}

// What counts as news for a packet from a new address (roamNews): data
// beyond all received, or an ack of unacknowledged data; not data that
// fills a gap (what the network reordered from the old address around a
// rebinding), nor a duplicate.
func TestRoamNews(t *testing.T) {
	sa, _ := vnetPair(t, vnet.Config{})
	s, err := sa.NewStream(1, &StreamOptions{Firewall: roamFirewall})
	if err != nil {
		t.Fatal(err)
	}
	peer, other := netipAddr("10.0.9.1:1000"), netipAddr("10.0.9.2:1000")
	if err := s.Connect(sa, 2, peer); err != nil {
		t.Fatal(err)
	}
	_ = s.u.do(func(now int64) error {
		data := func(seq uint32) Packet {
			return Packet{Header: Header{Type: FlagData, ID: 1, RWnd: defaultRwndMax, Seq: seq}, Payload: []byte("x")}
		}
		// From the peer: seq 0 in order, 2 and 3 out of order (a gap at 1).
		for _, q := range []uint32{0, 2, 3} {
			p := data(q)
			s.onPacket(nil, &p, now)
		}
		for _, c := range []struct {
			name string
			p    Packet
			news bool
		}{
			{"a duplicate", data(0), false},
			{"data filling the gap", data(1), false},
			{"data held already", data(3), false},
			{"data beyond all received", data(4), true},
			{"an ack of nothing new", Packet{Header: Header{ID: 1, Seq: 1}}, false},
		} {
			if got := s.roamCandidate(sa, other, &c.p); got != c.news || s.cand.IsValid() != c.news {
				t.Errorf("%s: candidate %v (%v), want %v", c.name, got, s.cand, c.news)
			}
			s.dropCandidate()
		}
		return nil
	})
}
