package tunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// udpService answers each datagram with reply(datagram, sender) from a
// loopback UDP socket, and counts the senders it has seen.
type udpService struct {
	pc      *net.UDPConn
	mu      sync.Mutex
	senders map[netip.AddrPort]int
}

func newUDPService(t testing.TB, reply func(p []byte, from netip.AddrPort) []byte) *udpService {
	s := &udpService{senders: map[netip.AddrPort]int{}}
	s.pc = proctest.ServeUDP(t, func(p []byte, from netip.AddrPort) []byte {
		s.mu.Lock()
		s.senders[from]++
		s.mu.Unlock()
		return reply(p, from)
	})
	return s
}

func (s *udpService) addr() string { return s.pc.LocalAddr().String() }

func (s *udpService) nSenders() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.senders)
}

// exposeDNSLike exposes a dnsLike service on n under a new key, until the
// test ends, and returns the key.
func exposeDNSLike(t testing.TB, n *fakeNet) key.KeyPair {
	svc := newUDPService(t, dnsLike)
	kp := genKey(t)
	e := NewExposer(n.listen(kp), svc.addr(), ExposeOptions{UDP: true, Logger: testLogger(t, nil)})
	t.Cleanup(func() { e.Close() })
	return kp
}

// dnsLike replies "<request>|<sender>": a client can match each reply to
// its request and see which source address the service saw.
func dnsLike(p []byte, from netip.AddrPort) []byte {
	return fmt.Appendf(nil, "%s|%s", p, from)
}

// udpRig is a UDP service exposed on one network and forwarded to a
// local UDP socket.
type udpRig struct {
	svc     *udpService
	exposer *Exposer
	fwd     *UDPForwarder
	addr    string
	events  *eventLog
	srvLog  *syncBuffer
}

func newUDPRig(t testing.TB, ln PeerListener, d Dialer, remote PeerListener, eopts ExposeOptions, fopts ForwardOptions) *udpRig {
	r := &udpRig{svc: newUDPService(t, dnsLike), events: &eventLog{}, srvLog: &syncBuffer{}}
	eopts.UDP = true
	if eopts.Logger == nil {
		eopts.Logger = testLogger(t, r.srvLog)
	}
	r.exposer = NewExposer(ln, r.svc.addr(), eopts)
	t.Cleanup(func() { r.exposer.Close() })
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if fopts.Logger == nil {
		fopts.Logger = testLogger(t, nil)
	}
	fopts.OnEvent = r.events.add
	r.fwd = NewUDPForwarder(d, remote.PublicKey(), pc, fopts)
	r.addr = pc.LocalAddr().String()
	t.Cleanup(func() { r.fwd.Close() })
	return r
}

// exchange sends req until a reply starting with req| arrives (a UDP
// client retries, as a DNS resolver does), and returns what follows the
// bar: the sender address the service saw.
func exchange(c *net.UDPConn, req string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65535)
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte(req)); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break // retry
			}
			if got, ok := strings.CutPrefix(string(buf[:n]), req+"|"); ok {
				return got, nil
			}
			// A late reply to an earlier request: keep reading.
		}
	}
	return "", fmt.Errorf("no reply to %q within %v", req, timeout)
}

// runClients has n clients each exchange k requests with the service
// behind addr and checks that every reply matches its request.
func runClients(t *testing.T, addr string, n, k int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		c := proctest.DialUDP(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range k {
				req := fmt.Sprintf("q%d-%d-%s", i, j, strings.Repeat("x", i*7))
				if _, err := exchange(c, req, 20*time.Second); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// countingConn counts the datagrams a peer connection sends.
type countingConn struct {
	ssConn
	sent *atomic.Int64
}

func (c countingConn) SendDatagram(p []byte) error {
	c.sent.Add(1)
	return c.ssConn.SendDatagram(p)
}

type countingDialer struct {
	*udxNet
	sent *atomic.Int64
}

func (d countingDialer) Dial(ctx context.Context, remote key.PublicKey) (PeerConn, error) {
	pc, err := d.udxNet.Dial(ctx, remote)
	if err != nil {
		return nil, err
	}
	return countingConn{pc.(ssConn), d.sent}, nil
}

func TestUDPFlowsFramedOnly(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := genKey(t), genKey(t)
	ln := n.listen(server)
	r := newUDPRig(t, ln, n.dialer(client), ln, ExposeOptions{}, ForwardOptions{})
	runClients(t, r.addr, 20, 5)
	if got := r.svc.nSenders(); got != 20 {
		t.Errorf("service saw %d sender addresses, want one per client (20)", got)
	}
	if got := n.dials.Load(); got != 1 {
		t.Errorf("%d peer connections, want 1 session for all flows", got)
	}
}

func TestUDPFlowsDatagrams(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newUDXNet(t)
	var sent atomic.Int64
	r := newUDPRig(t, n, countingDialer{n, &sent}, n, ExposeOptions{}, ForwardOptions{})
	runClients(t, r.addr, 20, 10)
	// Requests after the first of each flow fit the path (1200-byte MTU
	// until probing raises it) and go as datagrams.
	if got := sent.Load(); got < 20*8 {
		t.Errorf("client sent %d datagrams on the datagram channel, want most of the %d requests", got, 20*10)
	}
	// A datagram larger than the path goes framed on the flow's stream.
	c := proctest.DialUDP(t, r.addr)
	big := strings.Repeat("B", 8000)
	before := sent.Load()
	if _, err := exchange(c, big, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(c, big+"2", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if sent.Load() != before {
		t.Errorf("an 8000-byte datagram went on the datagram channel")
	}
	// 1200-byte datagrams do not fit udx's initial 1200-byte MTU; framed,
	// they are stream data, whose packets probe the path MTU up (in
	// steps of 32 bytes to 1500), and then they fit.
	mid := strings.Repeat("m", 1200)
	before = sent.Load()
	for i := range 200 {
		if _, err := exchange(c, fmt.Sprint(i, mid), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d of 200 1200-byte requests went as datagrams", sent.Load()-before)
	if sent.Load()-before < 100 {
		t.Errorf("only %d of 200 1200-byte requests went as datagrams: the path MTU was not probed up", sent.Load()-before)
	}
}

func TestUDPFlowIdleExpiry(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := genKey(t), genKey(t)
	ln := n.listen(server)
	flows := FlowOptions{IdleTimeout: 300 * time.Millisecond}
	r := newUDPRig(t, ln, n.dialer(client), ln, ExposeOptions{Flows: flows}, ForwardOptions{Flows: flows})
	c := proctest.DialUDP(t, r.addr)
	first, err := exchange(c, "a", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	again, err := exchange(c, "b", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Errorf("within the timeout the service saw %s, then %s: want one flow", first, again)
	}
	waitFor(t, "the idle flow to expire on both sides", func() bool {
		return r.fwd.Flows() == 0 && r.exposer.flows.len() == 0
	})
	after, err := exchange(c, "c", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if after == first {
		t.Errorf("after expiry the service saw the same source %s: want a new flow (a new socket)", after)
	}
	if r.fwd.Flows() != 1 {
		t.Errorf("%d flows after the next datagram, want 1", r.fwd.Flows())
	}
}

func TestUDPFlowCap(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := genKey(t), genKey(t)
	ln := n.listen(server)
	r := newUDPRig(t, ln, n.dialer(client), ln, ExposeOptions{Flows: FlowOptions{MaxFlows: 2}}, ForwardOptions{})
	for i := range 2 {
		if _, err := exchange(proctest.DialUDP(t, r.addr), fmt.Sprint("ok", i), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exchange(proctest.DialUDP(t, r.addr), "third", 2*time.Second); err == nil {
		t.Fatal("a third flow got through a cap of 2")
	}
	if !strings.Contains(r.srvLog.String(), "too many UDP flows") {
		t.Errorf("server log does not name the cap: %s", r.srvLog.String())
	}
	if len(r.events.of(EventRefused)) == 0 {
		t.Error("the forward emitted no refused event")
	}
}

func TestUDPRawHolesailFraming(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := genKey(t), genKey(t)
	ln := n.listen(server)
	r := newUDPRig(t, ln, n.dialer(client), ln, ExposeOptions{}, ForwardOptions{Raw: true})
	runClients(t, r.addr, 5, 5)
	if got := n.dials.Load(); got != 5 {
		t.Errorf("%d peer connections, want one per client (5), as holesail makes", got)
	}
}

// TestUDPHolesailBytes checks the raw framing byte for byte: a peer that
// writes holesail frames gets the service's reply in one.
func TestUDPHolesailBytes(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := exposeDNSLike(t, n), genKey(t)
	pc, err := n.dialer(client).Dial(context.Background(), server.Public)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := pc.Write([]byte("\x00\x00\x00\x03abc")); err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(pc, hdr[:]); err != nil {
		t.Fatal(err)
	}
	l := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	body := make([]byte, l)
	if _, err := io.ReadFull(pc, body); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(body), "abc|127.0.0.1:") {
		t.Fatalf("reply %q", body)
	}
}

func TestUDPKindMismatch(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := genKey(t), genKey(t)
	tcp := newTarget(t, echo)
	ln := n.listen(server)
	srvLog := &syncBuffer{}
	e := NewExposer(ln, tcp.addr(), ExposeOptions{Logger: testLogger(t, srvLog)})
	defer e.Close()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	events := &eventLog{}
	f := NewUDPForwarder(n.dialer(client), server.Public, pc, ForwardOptions{Logger: testLogger(t, nil), OnEvent: events.add})
	defer f.Close()
	if _, err := exchange(proctest.DialUDP(t, pc.LocalAddr().String()), "x", time.Second); err == nil {
		t.Fatal("a UDP flow got through to a TCP service")
	}
	waitFor(t, "a refused event", func() bool { return len(events.of(EventRefused)) > 0 })
	if err := events.of(EventRefused)[0].Err; err == nil || !strings.Contains(err.Error(), "without --udp") {
		t.Errorf("refusal %v does not say what to do", err)
	}
	if tcp.accepts.Load() != 0 {
		t.Error("the TCP target saw a connection")
	}

	// A TCP forward (mux1) to a UDP service is refused at the session.
	server2 := exposeDNSLike(t, n)
	c := NewClient(n.dialer(client), ForwardOptions{})
	defer c.Close()
	if _, err := c.Open(context.Background(), server2.Public); err == nil || !strings.Contains(err.Error(), "with --udp") {
		t.Errorf("TCP client to a UDP service: %v, want a refusal saying --udp", err)
	}
}

// TestMux2TCPStream checks the TCP kind of a mux2 stream header (a
// forward of a named service sends it): a reply, then the target's
// bytes; and that a name a one-service key lacks is refused with a
// reason.
func TestMux2TCPStream(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := genKey(t), genKey(t)
	tcp := newTarget(t, echo)
	e := NewExposer(n.listen(server), tcp.addr(), ExposeOptions{Logger: testLogger(t, nil)})
	defer e.Close()
	sess, err := dialSession(context.Background(), n.dialer(client), server.Public, preamble2, testLogger(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	open := func(h streamHeader) (net.Conn, error) {
		st, err := sess.OpenStream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := st.Write(appendStreamHeader(nil, h)); err != nil {
			t.Fatal(err)
		}
		return st, readStreamReply(st)
	}
	st, err := open(streamHeader{kind: kindTCP})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(st, "hello")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	st.Close()
	if _, err := open(streamHeader{kind: kindTCP, service: "web"}); err == nil || !strings.Contains(err.Error(), `no service "web" behind this key (it serves one unnamed service)`) {
		t.Errorf("named service: %v", err)
	}
	if _, err := open(streamHeader{kind: kindTCP, flags: 4}); err == nil || !strings.Contains(err.Error(), "flags") {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := open(streamHeader{kind: 7}); err == nil || !strings.Contains(err.Error(), "kind 7") {
		t.Errorf("unknown kind: %v", err)
	}
}

// BenchmarkUDPFlowUDX sends 1200-byte datagrams through one flow over the
// real transport in one process, offered at 100k/s (bursts of 100 a
// millisecond), and reports what reached the service (dgram/s, loss-%)
// and the share that went on the datagram channel rather than framed on
// the flow's stream (as-datagram). Without process wake-ups or a testnet
// it shows the tunnel's own cost; bench/'s BenchmarkUDP measures the
// binary.
func BenchmarkUDPFlowUDX(b *testing.B) {
	n := newUDXNet(b)
	n.plain = true
	var sent atomic.Int64
	var got atomic.Int64
	sink := newUDPService(b, func(p []byte, from netip.AddrPort) []byte {
		if p[0] == 'E' {
			return dnsLike(p, from)
		}
		got.Add(1)
		return nil
	})
	sink.pc.SetReadBuffer(8 << 20)
	e := NewExposer(n, sink.addr(), ExposeOptions{UDP: true, Logger: testLogger(b, io.Discard)})
	b.Cleanup(func() { e.Close() })
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	pc.SetReadBuffer(4 << 20) // as stack.ListenUDP does for the binary
	f := NewUDPForwarder(countingDialer{n, &sent}, n.server.Public, pc, ForwardOptions{Logger: testLogger(b, io.Discard)})
	b.Cleanup(func() { f.Close() })
	c := proctest.DialUDP(b, pc.LocalAddr().String())
	// 1200-byte datagrams go framed until the path MTU is probed up:
	// a few hundred of them.
	for i := range 300 {
		if _, err := exchange(c, fmt.Sprint("E", i, strings.Repeat("w", 1195)), 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	p := make([]byte, 1200)
	p[0] = 'D'
	b.ResetTimer()
	start := time.Now()
	s0, g0 := sent.Load(), got.Load()
	for i := range b.N {
		if i%100 == 0 {
			if d := time.Until(start.Add(time.Duration(i) * 10 * time.Microsecond)); d > 0 {
				time.Sleep(d)
			}
		}
		c.Write(p)
	}
	took := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	b.ReportMetric(float64(got.Load()-g0)/took.Seconds(), "dgram/s")
	b.ReportMetric(100*float64(int64(b.N)-(got.Load()-g0))/float64(b.N), "loss-%")
	b.ReportMetric(float64(sent.Load()-s0)/float64(b.N), "as-datagram")
}

// plainPacketConn hides the *net.UDPConn under a net.PacketConn, so that
// a UDPForwarder reads one datagram per call through ReadFrom and
// answers through WriteTo, as it does for any PacketConn.
type plainPacketConn struct{ net.PacketConn }

func TestUDPForwardAnyPacketConn(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := exposeDNSLike(t, n), genKey(t)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := NewUDPForwarder(n.dialer(client), server.Public, plainPacketConn{pc}, ForwardOptions{Logger: testLogger(t, nil)})
	defer f.Close()
	runClients(t, pc.LocalAddr().String(), 3, 5)
}

// A UDP forward shares the TCP forward's session keeper: a flow whose
// dial shows the peer unreachable is dropped at once (not held for
// WaitTimeout), new flows within the backoff are dropped without a dial,
// the first after it dials again; and both ends count flows, datagram
// payload, the peer session and the redial in their Stats.
func TestUDPUnreachableAndStats(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, client := genKey(t), genKey(t)
	ln := n.listen(server)
	d := n.dialer(client)
	d.definitive = true
	d.fail.Store(1)
	r := newUDPRig(t, ln, d, ln, ExposeOptions{}, ForwardOptions{BackoffBase: 2 * time.Second, BackoffMax: 4 * time.Second})
	c := proctest.DialUDP(t, r.addr)
	start := time.Now()
	if _, err := c.Write([]byte("q0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed dial", func() bool { return len(r.events.of(EventRedialing)) == 1 })
	// The default WaitTimeout is 30 s: a flow held for it would still
	// be open.
	waitFor(t, "the flow of the unreachable peer to be dropped", func() bool { return r.fwd.Flows() == 0 })
	t.Logf("flow dropped %v after its first datagram", time.Since(start).Round(time.Millisecond))
	delay := r.events.of(EventRedialing)[0].Delay
	if time.Since(start) < delay-200*time.Millisecond {
		// Within the backoff: a new flow is dropped without a dial.
		c.Write([]byte("q1"))
		waitFor(t, "the flow within the backoff to be dropped", func() bool { return r.fwd.Flows() == 0 })
		if got := n.dials.Load(); got != 0 || d.fail.Load() != 0 {
			t.Fatalf("a flow within the backoff dialed (%d connections, %d failures left)", got, d.fail.Load())
		}
	}
	const req = "q2"
	if _, err := exchange(c, req, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := n.dials.Load(); got != 1 {
		t.Fatalf("%d peer connections, want 1", got)
	}
	waitStats(t, "forward", r.fwd.Stats, func(s Stats) bool {
		return s.ConnsOpen == 1 && s.ConnsTotal >= 2 && s.BytesSent >= uint64(len(req)) &&
			s.BytesReceived > uint64(len(req)) && s.Redials == 1 && len(s.Peers) == 1 && s.Peers[0].Mode == "mux"
	})
	waitStats(t, "expose", r.exposer.Stats, func(s Stats) bool {
		return s.ConnsOpen == 1 && s.ConnsTotal == 1 && s.BytesReceived >= uint64(len(req)) &&
			s.BytesSent > uint64(len(req)) && len(s.Peers) == 1 && s.Peers[0].Remote == client.Public
	})
}
