package udx

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rebindingNAT stands between a client and a server on loopback: the
// client sends to inside, the NAT sends on to the server from its current
// mapping (a socket of its own) and passes the server's answers to that
// mapping back. Rebind opens a new mapping and closes the old one, so
// the server sees the client's packets come from a new port and its
// packets to the old one vanish, as when a NAT loses its state.
type rebindingNAT struct {
	t      testing.TB
	inside *net.UDPConn
	server netip.AddrPort
	wg     sync.WaitGroup

	dark atomic.Bool // drop everything, both ways

	mu     sync.Mutex
	out    *net.UDPConn
	client netip.AddrPort
}

func newRebindingNAT(t testing.TB, server netip.AddrPort) *rebindingNAT {
	n := &rebindingNAT{t: t, inside: mustUDP(t), server: server}
	n.Rebind()
	n.pump(n.inside, func(from netip.AddrPort) (*net.UDPConn, netip.AddrPort) {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.client = from
		return n.out, n.server
	})
	t.Cleanup(func() {
		n.inside.Close()
		n.mu.Lock()
		n.out.Close()
		n.mu.Unlock()
		n.wg.Wait()
	})
	return n
}

// pump copies what src reads to where dst says, except while dark, until
// src is closed.
func (n *rebindingNAT) pump(src *net.UDPConn, dst func(from netip.AddrPort) (*net.UDPConn, netip.AddrPort)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		buf := make([]byte, 2048)
		for {
			k, from, err := src.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n.dark.Load() {
				continue
			}
			c, to := dst(from)
			c.WriteToUDPAddrPort(buf[:k], to)
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
	out := mustUDP(n.t)
	n.mu.Lock()
	old := n.out
	n.out = out
	n.mu.Unlock()
	if old != nil {
		old.Close()
	}
	n.pump(out, func(netip.AddrPort) (*net.UDPConn, netip.AddrPort) {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.inside, n.client
	})
}

func roamFirewall(*Stream, *Socket, netip.AddrPort) FirewallVerdict { return FirewallRoam }

// roamPair connects a client stream (id 1) through a rebindingNAT to a
// server stream (id 2) whose firewall lets it roam; both time out after
// timeout (StreamOptions.Timeout).
func roamPair(t *testing.T, timeout time.Duration) (cl, srv *Stream, nat *rebindingNAT) {
	t.Helper()
	sc, ss := udpSocket(t), udpSocket(t)
	nat = newRebindingNAT(t, addrOf(ss))
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

// The client's NAT mapping changes twice in the middle of a transfer in
// both directions: the server's stream follows the client to each new
// port (Roams), and every byte arrives once, in order, both ways.
func TestRoamFollowsRebinding(t *testing.T) {
	cl, srv, nat := roamPair(t, 0)
	const n = 48 << 20
	rebound := make(chan []netip.AddrPort, 1)
	go func() {
		var maps []netip.AddrPort
		defer func() { rebound <- maps }()
		for _, at := range []uint64{3000, 12000} {
			for srv.Stats().PacketsReceived < at {
				select {
				case <-srv.Done():
					return
				case <-time.After(time.Millisecond):
				}
			}
			nat.Rebind()
			maps = append(maps, nat.Mapping())
		}
	}()
	start := time.Now()
	transfer(t, cl, srv, n, 60*time.Second)
	maps := <-rebound
	st := srv.Stats()
	t.Logf("%d MiB each way across %d rebindings in %v; server %+v", n>>20, len(maps), time.Since(start).Round(time.Millisecond), st)
	if len(maps) != 2 {
		t.Fatalf("the transfer ended before both rebindings (%d)", len(maps))
	}
	if st.Roams != 2 {
		t.Fatalf("server stream roamed %d times, want 2", st.Roams)
	}
	if got := srv.RemoteAddr().(*net.UDPAddr).AddrPort(); got != maps[1] {
		t.Fatalf("server sends to %v, the client's mapping is %v", got, maps[1])
	}
}

// Packets with the stream's id from another address that carry no news
// while the current path is live, or do not fit the stream's windows, as
// a blind or replaying sender would produce them, do not move the
// stream; one that fits after the path went silent does, and so does the
// peer's next packet.
func TestRoamRejectsStalePackets(t *testing.T) {
	cl, srv, nat := roamPair(t, 0)
	exchange(t, cl, srv)
	peer := nat.Mapping()
	var seq, ack, ackedBySrv uint32
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		_ = srv.u.do(func(int64) error {
			seq, ack, ackedBySrv = srv.seq, srv.ack, srv.remoteAcked
			return nil
		})
		if seq == ackedBySrv {
			break
		}
	}
	if seq != ackedBySrv {
		t.Fatalf("server has data in flight after the transfer: seq %d, acked %d", seq, ackedBySrv)
	}
	spoofer := mustUDP(t)
	defer spoofer.Close()
	send := func(h Header, payload []byte) {
		// A full window: a spoofed zero window would stall the stream
		// (as in libudx), which is not what this test is about.
		h.ID, h.RWnd = 2, defaultRwndMax
		b := make([]byte, HeaderSize+len(payload))
		h.Put(b)
		copy(b[HeaderSize:], payload)
		if _, err := spoofer.WriteToUDPAddrPort(b, addrOf(srv.sock)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name    string
		h       Header
		payload []byte
	}{
		{"ack with no news", Header{Seq: ack, Ack: seq}, nil},
		{"heartbeat", Header{Type: FlagHeartbeat, Seq: ack, Ack: seq}, nil},
		{"replayed data", Header{Type: FlagData, Seq: ack - 1, Ack: seq}, []byte("old")},
		{"ack of unsent data", Header{Seq: ack, Ack: seq + 5}, nil},
		{"ack from the past", Header{Seq: ack, Ack: seq - 7}, nil},
		{"data beyond the window", Header{Type: FlagData, Seq: ack + oooCap + 1, Ack: seq}, []byte("far")},
	} {
		// The client's path is live: a MESSAGE from it just arrived
		// (it moves no sequence number).
		if err := cl.Send([]byte("live")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		send(c.h, c.payload)
		time.Sleep(20 * time.Millisecond)
		if r := srv.Stats().Roams; r != 0 {
			t.Fatalf("%s moved the stream (%d roams)", c.name, r)
		}
	}
	if got := srv.RemoteAddr().(*net.UDPAddr).AddrPort(); got != peer {
		t.Fatalf("server sends to %v, want the client's mapping %v", got, peer)
	}
	// Once the client's path has been silent for roamSilence, a packet
	// that fits the windows moves the stream without news (a peer that
	// moved with nothing new to say); the client's next packet with
	// news moves it back.
	time.Sleep(300 * time.Millisecond)
	send(Header{Type: FlagData, Seq: ack - 1, Ack: seq}, []byte("old"))
	time.Sleep(20 * time.Millisecond)
	if r, got := srv.Stats().Roams, srv.RemoteAddr().(*net.UDPAddr).AddrPort(); r != 1 || got != spoofer.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("after 300 ms of silence a fitting packet from %v: %d roams, sending to %v", spoofer.LocalAddr(), r, got)
	}
	exchange(t, cl, srv)
	if r, got := srv.Stats().Roams, srv.RemoteAddr().(*net.UDPAddr).AddrPort(); r != 2 || got != peer {
		t.Fatalf("the client's next packets: %d roams, sending to %v, want 2 and %v", r, got, peer)
	}
	// And after a rebinding, the client's own next packet moves it.
	nat.Rebind()
	exchange(t, cl, srv)
	if r := srv.Stats().Roams; r != 3 {
		t.Fatalf("roamed %d times in all after one rebinding, want 3", r)
	}
}

// exchange sends 256 KiB each way, one way after the other, and checks
// it arrived, leaving both streams open.
func exchange(t *testing.T, a, b *Stream) {
	t.Helper()
	for _, d := range [][2]*Stream{{a, b}, {b, a}} {
		want := make([]byte, 256<<10)
		newPattern(7, int64(len(want))).Read(want)
		errc := make(chan error, 1)
		go func() { _, err := d[0].Write(want); errc <- err }()
		got := make([]byte, len(want))
		d[1].SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(d[1], got); err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("exchange: the data differs")
		}
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
	long.cl, long.srv, long.nat = roamPair(t, 25*time.Second)
	short.cl, short.srv, short.nat = roamPair(t, 25*time.Second)
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
