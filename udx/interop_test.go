package udx

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// nodePeer starts interop/udx-peer.js and returns it with its port and id.
func nodePeer(t *testing.T, args ...string) (*nodetest.Proc, netip.AddrPort, uint32) {
	t.Helper()
	p := nodetest.Start(t, "udx-peer.js", args...)
	f := strings.Fields(p.Expect("ready ", 20*time.Second))
	port, _ := strconv.Atoi(f[0])
	id, _ := strconv.ParseUint(f[1], 10, 32)
	return p, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), uint32(id)
}

func interopSize() int64 {
	if testing.Short() {
		return 16 << 20
	}
	return interopDefault
}

func TestInteropTransfer(t *testing.T) {
	for _, open := range []string{"go", "node"} {
		t.Run("open="+open, func(t *testing.T) {
			n := interopSize()
			p, naddr, nid := nodePeer(t, "--mode", "transfer", "--open", open, "--size", fmt.Sprint(n))
			interopTransfer(t, p, udpSocket(t), naddr, nid, open, n, interopLimit)
		})
	}
}

// interopTransfer runs the "transfer" mode of udx-peer.js against a Go
// stream on sock: n bytes each way at once, MESSAGEs, END both ways.
func interopTransfer(t *testing.T, p *nodetest.Proc, sock *Socket, naddr netip.AddrPort, nid uint32, open string, n int64, limit time.Duration) {
	opts := &StreamOptions{}
	if open == "node" {
		// Passive open, as hyperdht's server does.
		opts.Firewall = func(st *Stream, s *Socket, from netip.AddrPort) FirewallVerdict {
			if from == naddr {
				return FirewallConnect
			}
			return FirewallDrop
		}
		opts.RemoteID = nid
	}
	st, err := sock.NewStream(0x5eed0000+uint32(len(open)), opts)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(p.Stdin(), "peer %d %d\n", addrOf(sock).Port(), st.ID())
	p.Expect("peered", 10*time.Second)
	if open == "go" {
		if err := st.Connect(sock, nid, naddr); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	type res struct {
		sum [32]byte
		n   int64
		err error
	}
	sent, got := make(chan res, 1), make(chan res, 1)
	go func() {
		// In the node-opens case Write queues until the firewall
		// connects the stream on Node's first packet.
		s, err := sendAll(st, 77, n)
		sent <- res{sum: s, err: err}
	}()
	go func() { s, k, err := recvAll(st); got <- res{s, k, err} }()
	for k := 0; k < 3; k++ {
		if open == "go" || k > 0 {
			_ = st.Send([]byte(fmt.Sprintf("go-msg-%d", k)))
		}
	}
	var sr, gr res
	to := time.After(limit)
	for i := 0; i < 2; i++ {
		select {
		case sr = <-sent:
		case gr = <-got:
		case <-to:
			t.Fatalf("transfer timed out: %+v", st.Stats())
		}
	}
	if sr.err != nil || gr.err != nil {
		t.Fatalf("send %v recv %v", sr.err, gr.err)
	}
	// Node prints "end" when Go's END arrives, which may come before its
	// own "sent".
	lines := p.ExpectAll(30*time.Second, "sent ", "end ")
	if nodeSent := lines["sent "]; hex.EncodeToString(gr.sum[:]) != nodeSent || gr.n != n {
		t.Fatalf("Go received %d bytes, hash %x; Node sent %s", gr.n, gr.sum, nodeSent)
	}
	f := strings.Fields(lines["end "])
	if len(f) != 2 {
		t.Fatalf("Node's end line %q", lines["end "])
	}
	if f[0] != fmt.Sprint(n) || f[1] != hex.EncodeToString(sr.sum[:]) {
		t.Fatalf("Node received %s bytes hash %s; Go sent %x", f[0], f[1], sr.sum)
	}
	p.Expect("close", 10*time.Second)
	select {
	case <-st.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Go stream not closed after both ENDs")
	}
	if st.Err() != nil {
		t.Fatalf("Go stream closed with %v", st.Err())
	}
	el := time.Since(start)
	// Messages: at least one of three must have made it on loopback.
	_ = gotMessage(t, st, "node-msg-")
	t.Logf("%d MiB each way in %v (%.0f MB/s per direction); %+v", n>>20, el, float64(n)/el.Seconds()/1e6, st.Stats())
}

func gotMessage(t *testing.T, st *Stream, prefix string) string {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, m := range st.msgs {
		if strings.HasPrefix(string(m), prefix) {
			return string(m)
		}
	}
	t.Fatalf("no MESSAGE with prefix %q received", prefix)
	return ""
}

func TestInteropMessagesAndDestroy(t *testing.T) {
	t.Run("go-destroys", func(t *testing.T) {
		p, naddr, nid := nodePeer(t, "--mode", "destroy-go")
		sock := udpSocket(t)
		st, _ := sock.NewStream(77, nil)
		fmt.Fprintf(p.Stdin(), "peer %d %d\n", addrOf(sock).Port(), st.ID())
		p.Expect("peered", 10*time.Second)
		if err := st.Connect(sock, nid, naddr); err != nil {
			t.Fatal(err)
		}
		st.Write([]byte("hello"))
		p.Expect("data 5", 10*time.Second)
		st.Destroy()
		if !errors.Is(st.Err(), ErrDestroyed) {
			t.Fatalf("local err %v", st.Err())
		}
		p.Expect("error ECONNRESET", 10*time.Second)
		p.Expect("close", 10*time.Second)
	})
	t.Run("node-destroys", func(t *testing.T) {
		p, naddr, nid := nodePeer(t, "--mode", "destroy-node")
		sock := udpSocket(t)
		st, _ := sock.NewStream(78, nil)
		fmt.Fprintf(p.Stdin(), "peer %d %d\n", addrOf(sock).Port(), st.ID())
		p.Expect("peered", 10*time.Second)
		if err := st.Connect(sock, nid, naddr); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 3)
		if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "bye" {
			t.Fatalf("%q %v", buf, err)
		}
		st.Write([]byte("x"))
		p.Expect("destroyed", 10*time.Second)
		select {
		case <-st.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("DESTROY from Node not seen")
		}
		if !errors.Is(st.Err(), ErrReset) {
			t.Fatalf("err %v", st.Err())
		}
		if _, err := st.Read(buf); !errors.Is(err, ErrReset) {
			t.Fatalf("read: %v", err)
		}
	})
	t.Run("messages", func(t *testing.T) {
		p, naddr, nid := nodePeer(t, "--mode", "transfer", "--open", "go", "--size", "0")
		sock := udpSocket(t)
		st, _ := sock.NewStream(79, nil)
		fmt.Fprintf(p.Stdin(), "peer %d %d\n", addrOf(sock).Port(), st.ID())
		p.Expect("peered", 10*time.Second)
		st.Connect(sock, nid, naddr)
		// Node connects on our first packet, which must be a stream packet
		// its firewall sees: send a MESSAGE first, then more after.
		for k := 0; k < 3; k++ {
			st.Send([]byte(fmt.Sprintf("go-msg-%d", k)))
			time.Sleep(20 * time.Millisecond)
		}
		got := p.Expect("msg go-msg-", 10*time.Second)
		_ = got
		ctx, cancel := ctxTimeout(10 * time.Second)
		defer cancel()
		m, err := st.ReadMessage(ctx)
		if err != nil || !strings.HasPrefix(string(m), "node-msg-") {
			t.Fatalf("%q %v", m, err)
		}
		// And an empty stream closes cleanly both ways.
		st.CloseWrite()
		if _, err := io.ReadAll(st); err != nil {
			t.Fatal(err)
		}
		p.Expect("end 0 "+hex.EncodeToString(sha256Empty()), 10*time.Second)
		p.Expect("close", 10*time.Second)
		<-st.Done()
	})
}

func sha256Empty() []byte { s := sha256.Sum256(nil); return s[:] }
