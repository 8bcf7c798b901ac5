package udx

import (
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/vnet"
)

// checkNoLeak fails the test if goroutines started after it was called are
// still running shortly after the test body returns.
func checkNoLeak(t *testing.T) func() {
	before := runtime.NumGoroutine()
	return func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				var ours []string
				for _, g := range strings.Split(string(buf), "\n\n") {
					if strings.Contains(g, "/udx.") || strings.Contains(g, "/vnet.") {
						ours = append(ours, g)
					}
				}
				t.Fatalf("%d goroutines left (had %d):\n%s", n, before, strings.Join(ours, "\n\n"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestCloseReleasesGoroutines(t *testing.T) {
	done := checkNoLeak(t)
	func() {
		// UDP sockets with live streams, blocked readers and writers.
		u := New()
		var socks []*Socket
		for range 3 {
			pc := mustUDP(t)
			s, err := u.NewSocket(pc)
			if err != nil {
				t.Fatal(err)
			}
			socks = append(socks, s)
		}
		a, _ := u.NewStream(1, nil)
		b, _ := u.NewStream(2, nil)
		a.Connect(socks[0], 2, addrOf(socks[1]))
		b.Connect(socks[1], 1, addrOf(socks[0]))
		a.Write(make([]byte, 1<<20))
		io.ReadFull(b, make([]byte, 1<<20))
		blocked := make(chan error, 2)
		go func() { _, err := a.Read(make([]byte, 10)); blocked <- err }()
		go func() { _, _, err := socks[2].ReadFrom(make([]byte, 10)); blocked <- err }()
		time.Sleep(20 * time.Millisecond)
		socks[2].Close()
		socks[2].Close() // idempotent
		u.Close()
		u.Close()
		for range 2 {
			select {
			case err := <-blocked:
				if err == nil {
					t.Fatal("blocked call returned nil")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("blocked call not released by Close")
			}
		}
		if _, err := a.Write([]byte("x")); err == nil {
			t.Fatal("write after close")
		}

		// A private-instance socket over vnet.
		nw := vnet.New(vnet.Config{Delay: time.Millisecond})
		c, _ := nw.Listen(addrZero)
		s, _ := NewSocket(c)
		st, _ := s.NewStream(9, nil)
		st.Connect(s, 10, c.AddrPort())
		st.Write([]byte("to nowhere"))
		s.Close()
		s.Close()
		nw.Close()
	}()
	done()
}
