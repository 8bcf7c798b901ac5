package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/conntest"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// namedTarget answers a connection's bytes, once the client half-closes,
// with name:bytes, so that a client sees which target it reached.
func namedTarget(t testing.TB, name string) *target {
	return newTarget(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		c.Write(append([]byte(name+":"), b...))
		c.CloseWrite()
	})
}

// ask sends msg through the TCP port at addr, half-closes, and returns
// what comes back.
//
// A refusal can come back while the dial is still in flight: the
// forwarder accepts, learns the refusal in a millisecond and resets the
// connection, and the reset can reach the socket before net.Dial reads
// its result. That is a refused connection, the empty answer.
func ask(t testing.TB, addr, msg string) string {
	t.Helper()
	c, err := tryDialTCP(addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, msg)
	c.CloseWrite()
	b, _ := io.ReadAll(c)
	return string(b)
}

// forwardTo forwards a loopback port to service behind server as kp.
func forwardTo(t testing.TB, n *fakeNet, kp key.KeyPair, server key.PublicKey, service string, log io.Writer, events *eventLog) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := ForwardOptions{Service: service, Logger: testLogger(t, log), WaitTimeout: 10 * time.Second}
	if events != nil {
		opts.OnEvent = events.add
	}
	f := NewForwarder(n.dialer(kp), server, ln, opts)
	t.Cleanup(func() { f.Close() })
	return ln.Addr().String()
}

// TestServices exposes two TCP services and a UDP one under one key, and
// reaches each by name, the default by mux1, raw and an empty name, and
// is refused, with the reason, for a name the key does not serve, a
// service of the other kind, and a service whose allow list lacks the
// client's key.
func TestServices(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, friend, stranger := genKey(t), genKey(t), genKey(t)
	web, ssh := namedTarget(t, "web"), namedTarget(t, "ssh")
	dns := newUDPService(t, dnsLike)
	srvLog := &syncBuffer{}
	e := NewExposer(n.listen(server), "", ExposeOptions{
		DetectTimeout: 100 * time.Millisecond,
		Logger:        testLogger(t, srvLog),
		Services: []Service{
			{Name: "web", Target: web.addr()},
			{Name: "ssh", Target: ssh.addr(), Allow: NewAllowList(friend.Public)},
			{Name: "dns", Target: dns.addr(), UDP: true},
		},
	})
	defer e.Close()

	// The first service is the default: mux1, raw and "" reach it.
	if got := ask(t, forwardTo(t, n, stranger, server.Public, "", nil, nil), "a"); got != "web:a" {
		t.Errorf("mux1 forward got %q, want the default service", got)
	}
	rawLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw := NewForwarder(n.dialer(stranger), server.Public, rawLn, ForwardOptions{Raw: true, Logger: testLogger(t, nil)})
	defer raw.Close()
	if got := ask(t, rawLn.Addr().String(), "b"); got != "web:b" {
		t.Errorf("raw forward got %q, want the default service", got)
	}
	if got := ask(t, forwardTo(t, n, friend, server.Public, "web", nil, nil), "c"); got != "web:c" {
		t.Errorf("forward to web got %q", got)
	}
	if got := ask(t, forwardTo(t, n, friend, server.Public, "ssh", nil, nil), "d"); got != "ssh:d" {
		t.Errorf("forward to ssh got %q", got)
	}
	// A Client opens named services and its default on separate sessions,
	// and gets a refusal from OpenService itself.
	cl := NewClient(n.dialer(friend), ForwardOptions{Logger: testLogger(t, nil)})
	defer cl.Close()
	for svc, want := range map[string]string{"ssh": "ssh:f", "": "web:f", "web": "web:f"} {
		c, err := cl.OpenService(context.Background(), server.Public, svc)
		if err != nil {
			t.Fatalf("OpenService %q: %v", svc, err)
		}
		io.WriteString(c, "f")
		c.CloseWrite()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if b, _ := io.ReadAll(c); string(b) != want {
			t.Errorf("OpenService %q: %q, want %q", svc, b, want)
		}
		c.Close()
	}
	if _, err := cl.OpenService(context.Background(), server.Public, "db"); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `no service "db"`) {
		t.Errorf("OpenService db: %v", err)
	}
	var out bytes.Buffer
	err = Pipe(context.Background(), n.dialer(friend), server.Public, struct {
		io.Reader
		io.Writer
	}{strings.NewReader("e"), &out}, ForwardOptions{Service: "ssh", Logger: testLogger(t, nil)})
	if err != nil || out.String() != "ssh:e" {
		t.Errorf("Pipe to ssh: %q, %v", out.String(), err)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	uf := NewUDPForwarder(n.dialer(stranger), server.Public, pc, ForwardOptions{Service: "dns", Logger: testLogger(t, nil)})
	defer uf.Close()
	if _, err := exchange(proctest.DialUDP(t, pc.LocalAddr().String()), "q", 10*time.Second); err != nil {
		t.Errorf("UDP forward to dns: %v", err)
	}

	// Refusals: the connection closes empty, and the forward logs one
	// line with the server's reason.
	refused := func(kp key.KeyPair, service, want string) {
		t.Helper()
		lg, events := &syncBuffer{}, &eventLog{}
		// The refusal needs nothing from the local client, so its reset
		// may beat the dialer's own check of the connect (the race
		// detector slows that down): a dial that fails is a refusal too.
		if c, err := net.Dial("tcp", forwardTo(t, n, kp, server.Public, service, lg, events)); err == nil {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "x")
			if b, _ := io.ReadAll(c); len(b) != 0 {
				t.Errorf("forward to %q got %q, want a refusal", service, b)
			}
			c.Close()
		}
		// The text handler quotes the message.
		waitFor(t, "the refusal's log line: "+want+" in\n"+lg.String(), func() bool { return strings.Contains(strings.ReplaceAll(lg.String(), `\"`, `"`), want) })
		if c := strings.Count(lg.String(), "connection refused by the peer"); c != 1 {
			t.Errorf("forward to %q logged %d refusals:\n%s", service, c, lg)
		}
		if ev := events.of(EventRefused); len(ev) != 1 || !errors.Is(ev[0].Err, ErrRefused) || ev[0].Service != service {
			t.Errorf("forward to %q: refused events %+v", service, ev)
		}
	}
	refused(friend, "db", `no service "db" behind this key (it serves: web, ssh, dns)`)
	refused(stranger, "ssh", `key `+stranger.Public.String()+` is not in the allow list of service "ssh"`)
	refused(friend, "dns", `service "dns" behind this key is UDP; forward it with --udp`)
	if a := ssh.accepts.Load(); a != 3 {
		t.Errorf("ssh target saw %d connections, want the friend's 3", a)
	}

	// A UDP flow to a TCP service is refused with the reason.
	pc2, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	events := &eventLog{}
	uf2 := NewUDPForwarder(n.dialer(friend), server.Public, pc2, ForwardOptions{Service: "web", Logger: testLogger(t, nil), OnEvent: events.add})
	defer uf2.Close()
	if _, err := exchange(proctest.DialUDP(t, pc2.LocalAddr().String()), "q", time.Second); err == nil {
		t.Error("a UDP flow reached the TCP service web")
	}
	waitFor(t, "a refused event", func() bool { return len(events.of(EventRefused)) > 0 })
	if err := events.of(EventRefused)[0].Err; err == nil || !strings.Contains(err.Error(), `service "web" behind this key is TCP`) {
		t.Errorf("UDP to web: %v", err)
	}
	if lg := srvLog.String(); !strings.Contains(lg, `refused stream: no service \"db\"`) {
		t.Errorf("server log lacks the refusal:\n%s", lg)
	}
}

// TestServicesDefaultTarget: with a positional target, it is the
// default (name ""), its Allow applies to mux1 and raw clients, and a
// mux2 session is admitted when any service admits the key.
func TestServicesDefaultTarget(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, friend, stranger := genKey(t), genKey(t), genKey(t)
	main, open := namedTarget(t, "main"), namedTarget(t, "open")
	e := NewExposer(n.listen(server), main.addr(), ExposeOptions{
		Allow:    NewAllowList(friend.Public),
		Logger:   testLogger(t, nil),
		Services: []Service{{Name: "open", Target: open.addr()}},
	})
	defer e.Close()
	if got := ask(t, forwardTo(t, n, friend, server.Public, "", nil, nil), "a"); got != "main:a" {
		t.Errorf("friend, default: %q", got)
	}
	if got := ask(t, forwardTo(t, n, stranger, server.Public, "", nil, nil), "b"); got != "" {
		t.Errorf("stranger reached the default service: %q", got)
	}
	if got := ask(t, forwardTo(t, n, stranger, server.Public, "open", nil, nil), "c"); got != "open:c" {
		t.Errorf("stranger, open service: %q", got)
	}
	if main.accepts.Load() != 1 {
		t.Errorf("main saw %d connections, want the friend's one", main.accepts.Load())
	}
}

// TestServicesSessionAllow: a peer no service admits is refused at the
// session, before any stream.
func TestServicesSessionAllow(t *testing.T) {
	conntest.CheckGoroutines(t)
	n := newFakeNet(t)
	server, a, b, stranger := genKey(t), genKey(t), genKey(t), genKey(t)
	tg := namedTarget(t, "x")
	e := NewExposer(n.listen(server), "", ExposeOptions{Logger: testLogger(t, nil), Services: []Service{
		{Name: "x", Target: tg.addr(), Allow: NewAllowList(a.Public)},
		{Name: "y", Target: tg.addr(), Allow: NewAllowList(b.Public)},
	}})
	defer e.Close()
	if _, err := dialSession(context.Background(), n.dialer(stranger), server.Public, preamble2, testLogger(t, nil)); !errors.Is(err, ErrRefused) {
		t.Errorf("stranger's session: %v, want ErrRefused", err)
	}
	sess, err := dialSession(context.Background(), n.dialer(b), server.Public, preamble2, testLogger(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	sess.Close()
	// mux1 reaches the default, the first service, whose list lacks b.
	if _, err := dialSession(context.Background(), n.dialer(b), server.Public, preamble, testLogger(t, nil)); !errors.Is(err, ErrRefused) {
		t.Errorf("b's mux1 session to the default x: %v, want ErrRefused", err)
	}
	if sess, err := dialSession(context.Background(), n.dialer(a), server.Public, preamble, testLogger(t, nil)); err != nil {
		t.Errorf("a's mux1 session to the default x: %v", err)
	} else {
		sess.Close()
	}
	if got := SessionAllow(NewAllowList(a.Public), NewAllowList(b.Public)); !got.Allows(a.Public) || !got.Allows(b.Public) || got.Allows(stranger.Public) {
		t.Errorf("SessionAllow union: %v", got)
	}
	if got := SessionAllow(NewAllowList(a.Public), nil); got != nil {
		t.Errorf("SessionAllow with an open service: %v, want nil", got)
	}
}

func TestCheckServices(t *testing.T) {
	for _, tc := range []struct {
		svcs []Service
		want string
	}{
		{[]Service{{Name: "web"}, {Name: "ssh-2"}, {Name: "a.b_c"}}, ""},
		{[]Service{{Name: ""}}, "1 to 63 bytes"},
		{[]Service{{Name: strings.Repeat("a", 64)}}, "1 to 63 bytes"},
		{[]Service{{Name: "Web"}}, "only a-z"},
		{[]Service{{Name: "a/b"}}, "only a-z"},
		{[]Service{{Name: "web"}, {Name: "web"}}, "named twice"},
	} {
		err := CheckServices(tc.svcs)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrBadService)) {
			t.Errorf("%v: %v, want %q", tc.svcs, err, tc.want)
		}
	}
}
