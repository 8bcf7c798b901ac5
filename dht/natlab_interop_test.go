package dht

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/nodetest"
)

// matrixCell is one result of TestNATMatrixInterop.
type matrixCell struct {
	dir    string // "Go→Node" or "Node→Go"
	client natlab.Kind
	server natlab.Kind
	result string
}

// TestNATMatrixInterop runs the NAT matrix across implementations in the
// lab: a Go client against a Node hyperdht server, and a Node client
// against a Go server, for client and server each public, behind a
// consistent NAT or behind a randomizing NAT. Every pair but random×random
// connects directly (the stream's remote is the server's public mapping,
// checked on both ends), and random×random fails fast: the Go client with
// ErrDoubleRandomized, the Node client with whatever the reference reports,
// which is recorded.
//
// The cells run in parallel (each has its own hosts and NATs; the lab's
// public DHT is shared), so the whole matrix costs about its slowest cell.
func TestNATMatrixInterop(t *testing.T) {
	natlab.Require(t)
	nodetest.Require(t)
	ln := newLabNet(t)
	boot := strings.Join(ln.boot, ",")
	kinds := []natlab.Kind{natlab.Public, natlab.Consistent, natlab.Random}
	var mu sync.Mutex
	var cells []matrixCell
	record := func(c matrixCell) {
		mu.Lock()
		cells = append(cells, c)
		mu.Unlock()
	}
	t.Run("cells", func(t *testing.T) {
		i := 0
		for _, ck := range kinds {
			for _, sk := range kinds {
				// Hosts are made here, sequentially: the lab is not
				// meant to be grown from parallel goroutines.
				sh, ch := ln.host(sk), ln.host(ck)
				seed := byte(0x40 + i)
				t.Run(fmt.Sprintf("go-client-%v/node-server-%v", ck, sk), func(t *testing.T) {
					t.Parallel()
					record(goClientNodeServer(t, ln, boot, ch, ck, sh, sk, seed))
				})
				sh2, ch2 := ln.host(sk), ln.host(ck)
				seed2 := byte(0x60 + i)
				t.Run(fmt.Sprintf("node-client-%v/go-server-%v", ck, sk), func(t *testing.T) {
					t.Parallel()
					record(nodeClientGoServer(t, ln, boot, ch2, ck, sh2, sk, seed2))
				})
				i++
			}
		}
	})
	var b strings.Builder
	b.WriteString("NAT matrix across implementations (connect time):\n")
	fmt.Fprintf(&b, "  %-8s %-11s %-11s %s\n", "", "client", "server", "result")
	for _, dir := range []string{"Go→Node", "Node→Go"} {
		for _, ck := range kinds {
			for _, sk := range kinds {
				for _, c := range cells {
					if c.dir == dir && c.client == ck && c.server == sk {
						fmt.Fprintf(&b, "  %-8s %-11v %-11v %s\n", dir, ck, sk, c.result)
					}
				}
			}
		}
	}
	t.Log(b.String())
}

// goClientNodeServer: a Node hyperdht server on sh, a Go client on ch.
func goClientNodeServer(t *testing.T, ln *labNet, boot string, ch *natlab.Host, ck natlab.Kind, sh *natlab.Host, sk natlab.Kind, seed byte) matrixCell {
	cell := matrixCell{dir: "Go→Node", client: ck, server: sk}
	skp := seedKey(seed)
	p := nodetest.StartIn(t, sh.ExecPrefix(), "hyperdht-peer.js", "server", boot, fmt.Sprintf("%x", skp.Seed()))
	cli := ln.node(t, ch, ck)
	if got := p.Expect("listening ", 60*time.Second); got != skp.Public.String() {
		t.Fatalf("node listens on %s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	ckp := seedKey(seed + 0x80)
	c, err := cli.Dial(ctx, skp.Public, &DialOptions{KeyPair: ckp})
	took := time.Since(start)
	if ck == natlab.Random && sk == natlab.Random {
		// The Node server aborts the first probe round (both NATs
		// randomize: holepuncher.js _unstable); the Go client, itself
		// behind a randomizing NAT, reads that as double randomization.
		if !errors.Is(err, ErrDoubleRandomized) {
			t.Errorf("want %v, got %v", ErrDoubleRandomized, err)
		} else if took > 15*time.Second {
			t.Errorf("failing took %v", took)
		}
		if c != nil {
			c.Close()
		}
		cell.result = fmt.Sprintf("fails in %v: %v", took.Round(time.Millisecond), err)
		return cell
	}
	if err != nil {
		t.Errorf("dial: %v (after %v)", err, took)
		cell.result = "FAILED " + err.Error()
		return cell
	}
	defer c.Close()
	ra, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	if ra.Addr() != publicHost(sh, sk) {
		t.Errorf("connected to %v, want the server's public address %v", ra, publicHost(sh, sk))
	}
	roundTrip(t, c, 64<<10)
	// The Node server's raw stream goes to our public mapping too.
	line := p.Expect("connection ", 10*time.Second)
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != ckp.Public.String() {
		t.Fatalf("Node server saw %q", line)
	}
	if sa, err := netip.ParseAddrPort(f[1]); err != nil || sa.Addr() != publicHost(ch, ck) {
		t.Errorf("Node server's stream goes to %s, want the client's public address %v", f[1], publicHost(ch, ck))
	}
	cell.result = fmt.Sprintf("direct in %v (client → %v, server → %s)", took.Round(time.Millisecond), ra, f[1])
	return cell
}

// nodeClientGoServer: a Go server on sh, a Node hyperdht client on ch.
func nodeClientGoServer(t *testing.T, ln *labNet, boot string, ch *natlab.Host, ck natlab.Kind, sh *natlab.Host, sk natlab.Kind, seed byte) matrixCell {
	cell := matrixCell{dir: "Node→Go", client: ck, server: sk}
	skp := seedKey(seed)
	srv := ln.node(t, sh, sk)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := srv.Listen(ctx, skp, nil)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	accepted := make(chan netip.AddrPort, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ra, _ := netip.ParseAddrPort(c.RemoteAddr().String())
			accepted <- ra
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						c.(*Conn).CloseWrite()
						return
					}
				}
			}()
		}
	}()
	start := time.Now()
	p := nodetest.StartIn(t, ch.ExecPrefix(), "hyperdht-peer.js", "client", boot, skp.Public.String(), fmt.Sprint(64<<10), "1")
	line := p.Expect("", 60*time.Second)
	took := time.Since(start)
	f := strings.Fields(line)
	if ck == natlab.Random && sk == natlab.Random {
		// The reference's verdict, recorded: the Go server answers the
		// probe round with its firewall, the Node client's probeRound
		// finds both randomized and aborts, and destroying its puncher
		// (onabort) reports HOLEPUNCH_ABORTED first. It must be quick.
		if len(f) < 2 || f[0] != "error" || f[1] != "HOLEPUNCH_ABORTED" {
			t.Errorf("Node client across two randomizing NATs: %q, want error HOLEPUNCH_ABORTED", line)
		}
		if took > 15*time.Second {
			t.Errorf("failing took %v (Node process included)", took)
		}
		cell.result = fmt.Sprintf("fails in %v incl. Node start-up: %s", took.Round(time.Millisecond), strings.TrimPrefix(line, "error "))
		select {
		case ra := <-accepted:
			t.Errorf("the Go server accepted a connection from %v", ra)
		default:
		}
		return cell
	}
	if len(f) != 5 || f[0] != "result" {
		t.Errorf("Node client: %q", line)
		cell.result = "FAILED " + line
		return cell
	}
	if f[2] != f[3] {
		t.Errorf("Node client sent %s, got back %s", f[2], f[3])
	}
	if ra, err := netip.ParseAddrPort(f[4]); err != nil || ra.Addr() != publicHost(sh, sk) {
		t.Errorf("Node client's stream goes to %s, want the server's public address %v", f[4], publicHost(sh, sk))
	}
	select {
	case ra := <-accepted:
		if ra.Addr() != publicHost(ch, ck) {
			t.Errorf("Go server's stream goes to %v, want the client's public address %v", ra, publicHost(ch, ck))
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the Go server never accepted the connection")
	}
	ms, _ := strconv.Atoi(f[1])
	cell.result = fmt.Sprintf("direct in %v (client → %s)", time.Duration(ms)*time.Millisecond, f[4])
	return cell
}
