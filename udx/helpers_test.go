package udx

import (
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

func udpSocket(t testing.TB) *Socket {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSocket(pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addrOf(s *Socket) netip.AddrPort { return s.localAddrPort() }

// pair connects stream a (on sa) and b (on sb) to each other.
func pair(t testing.TB, sa, sb *Socket, ida, idb uint32) (*Stream, *Stream) {
	t.Helper()
	a, err := sa.NewStream(ida, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sb.NewStream(idb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Connect(sa, idb, addrOf(sb)); err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(sb, ida, addrOf(sa)); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// pattern is a deterministic pseudo-random byte source.
type pattern struct {
	r *rand.ChaCha8
	n int64
}

func newPattern(seed uint64, n int64) *pattern {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return &pattern{r: rand.NewChaCha8(s), n: n}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	p.r.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

// sendAll writes n pattern bytes then CloseWrite; returns their SHA-256.
func sendAll(w interface {
	io.Writer
	CloseWrite() error
}, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	src := newPattern(seed, n)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, werr := w.Write(buf[:k]); werr != nil {
				return [32]byte{}, werr
			}
		}
		if err == io.EOF {
			break
		}
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, w.CloseWrite()
}

func recvAll(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 64<<10))
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

var addrZero netip.AddrPort

func deadline(t testing.TB, d time.Duration) <-chan time.Time {
	return time.After(d)
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func mustUDP(t testing.TB) *net.UDPConn {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

func netipAddr(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
