package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// dnsService is a DNS-like UDP service: a request is a 2-byte id and a
// name, the reply the same id, "A <name>" and the source address it came
// from, so that a client matches each reply to its request and sees which
// flow (source socket) carried it.
type dnsService struct {
	pc      *net.UDPConn
	mu      sync.Mutex
	senders map[string]int
}

func newDNSService(t *testing.T) *dnsService {
	s := &dnsService{senders: map[string]int{}}
	s.pc = proctest.ServeUDP(t, func(p []byte, from netip.AddrPort) []byte {
		if len(p) < 2 {
			return nil
		}
		s.mu.Lock()
		s.senders[from.String()]++
		s.mu.Unlock()
		return fmt.Appendf(append([]byte{}, p[:2]...), "A %s %s", p[2:], from)
	})
	return s
}

func (s *dnsService) port() string {
	return fmt.Sprint(s.pc.LocalAddr().(*net.UDPAddr).Port)
}

func (s *dnsService) nSenders() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.senders)
}

// resolve asks the service behind c for name under id, retrying as a stub
// resolver does, and returns the source address the service saw.
func resolve(c *net.UDPConn, id uint16, name string) (string, error) {
	req := binary.BigEndian.AppendUint16(nil, id)
	req = append(req, name...)
	buf := make([]byte, 2048)
	for try := 0; try < 20; try++ {
		if _, err := c.Write(req); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			if n < 2 || binary.BigEndian.Uint16(buf) != id {
				continue // a late answer to an earlier try
			}
			rest, ok := strings.CutPrefix(string(buf[2:n]), "A "+name+" ")
			if !ok {
				return "", fmt.Errorf("id %d: answer %q is not for %q", id, buf[2:n], name)
			}
			return rest, nil
		}
	}
	return "", fmt.Errorf("no answer for %q (id %d)", name, id)
}

// TestE2EUDPDNSLike: a DNS-like service behind expose --udp, reached
// through forward --udp by 50 clients at once, every answer matched to
// its question; each client is one flow (the service sees 50 sources),
// and all ride one peer session. A flow idle past its timeout is dropped
// and the next datagram starts a new one (a new source at the service).
func TestE2EUDPDNSLike(t *testing.T) {
	bs := e2eTestnet(t)
	svc := newDNSService(t)
	ex, pub := proctest.Expose(t, bs, svc.port(), "--udp", "--udp-idle-timeout", "1s")
	fw, local := proctest.Forward(t, bs, pub, "--udp", "--udp-idle-timeout", "1s")

	const clients, queries = 50, 20
	udpClients(t, local, clients, queries)
	if n := svc.nSenders(); n != clients {
		t.Errorf("the service saw %d source addresses, want one flow per client (%d)", n, clients)
	}
	if n := fw.Out.Count(`"event":"connected"`); n != 1 {
		t.Errorf("forward made %d peer sessions, want 1", n)
	}
	if n := ex.Out.Count(`"event":"connected"`); n != 1 {
		t.Errorf("expose saw %d peer sessions, want 1", n)
	}

	c := proctest.DialUDP(t, local)
	first, err := resolve(c, 1, "idle.example")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := resolve(c, 2, "idle.example"); err != nil || again != first {
		t.Fatalf("within the timeout: %s then %s (%v), want one flow", first, again, err)
	}
	time.Sleep(2500 * time.Millisecond) // > 1 s timeout and its check interval, on both sides
	after, err := resolve(c, 3, "idle.example")
	if err != nil {
		t.Fatal(err)
	}
	if after == first {
		t.Errorf("after 2.5 s idle the service still saw %s: want a new flow (a new source socket)", after)
	}
}

// TestE2EUDPFlags: flow flags without --udp are refused with one line.
func TestE2EUDPFlags(t *testing.T) {
	proctest.Binary(t)
	code, _, errs := runProc(t, "forward", "--max-flows", "3", strings.Repeat("a", 64), "0")
	if code == 0 || !strings.Contains(errs, "--max-flows applies only with --udp") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}
