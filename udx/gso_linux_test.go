//go:build linux && (amd64 || arm64 || riscv64 || ppc64le || loong64 || s390x || mips64 || mips64le || ppc64)

package udx

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// offloadBatch is what TestOffloadLoopback sends: numbered datagrams, most
// to the GRO socket in runs that may share a send (equal sizes, a
// shorter last, more than fit in one), some to a plain socket between
// them, which must get them one by one as a peer without GRO (libudx)
// does.
func offloadBatch(toGRO, toPlain netip.AddrPort) (msgs []txMsg, gro, plain [][]byte) {
	add := func(to netip.AddrPort, count, size int) {
		for range count {
			b := make([]byte, size)
			for i := range b {
				b[i] = byte(len(msgs) + i)
			}
			binary.BigEndian.PutUint16(b, uint16(len(msgs)))
			msgs = append(msgs, txMsg{b: b, addr: to})
			// Whatever the buffers, a datagram is read as libudx
			// reads it: its first 2048 bytes.
			if to == toGRO {
				gro = append(gro, b[:min(size, recvBufferSize)])
			} else {
				plain = append(plain, b[:min(size, recvBufferSize)])
			}
		}
	}
	add(toGRO, 30, 1200)
	add(toGRO, 1, 700)
	add(toPlain, 10, 1000)
	add(toGRO, 100, 1000) // more than one run's worth
	add(toGRO, 3, 300)
	add(toPlain, 1, 200)
	add(toGRO, 1, 2)
	add(toGRO, 2, 3000) // a run of datagrams longer than libudx reads
	add(toPlain, 1, 5000)
	return msgs, gro, plain
}

func rawIO(t *testing.T, c *net.UDPConn, v6, gso, gro bool) *rawMmsgIO {
	t.Helper()
	m, ok := newBatchIO(c, v6, gso, gro).(*rawMmsgIO)
	if !ok {
		t.Fatal("no raw batch I/O")
	}
	return m
}

func loopback(c *net.UDPConn) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.LocalAddr().(*net.UDPAddr).Port))
}

// TestOffloadLoopback: a batch sent with GSO arrives at a GRO socket, and
// at a plain one, as exactly the datagrams sent, each with its bytes and
// boundaries; with the offloads off (the fallback) it arrives the same.
// Where the kernel has the offloads, they must have been used.
func TestOffloadLoopback(t *testing.T) {
	for _, tc := range []struct {
		on              bool
		network, listen string
		v6              bool
	}{
		{true, "udp4", "127.0.0.1:0", false},
		{false, "udp4", "127.0.0.1:0", false},
		// Dual-stack sockets: IPv4 peers are v4-mapped.
		{true, "udp", "[::]:0", true},
	} {
		on := tc.on
		t.Run(fmt.Sprintf("offload=%v/%s", on, tc.network), func(t *testing.T) {
			a := listenUDP(t, tc.network, tc.listen)
			b := listenUDP(t, tc.network, tc.listen)
			c := listenUDP(t, tc.network, tc.listen)
			for _, x := range []*net.UDPConn{a, b, c} {
				x.SetReadBuffer(4 << 20)
			}
			tx, rx := rawIO(t, a, tc.v6, on, false), rawIO(t, b, tc.v6, false, on)
			if !on && (tx.gso || rx.gro) {
				t.Fatal("offloads on although not asked for")
			}
			msgs, wantGRO, wantPlain := offloadBatch(loopback(b), loopback(c))
			tx.write(msgs)

			got := readAll(t, b, rx, loopback(a), len(wantGRO))
			checkDatagrams(t, "GRO socket", got, wantGRO)
			var plain [][]byte
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 2048)
			for range wantPlain {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("plain socket, after %d datagrams: %v", len(plain), err)
				}
				plain = append(plain, bytes.Clone(buf[:n]))
			}
			checkDatagrams(t, "plain socket", plain, wantPlain)
			t.Logf("gso %v: %d sends of %d datagrams; gro %v: %d reads of %d", tx.gso, tx.gsoSends, tx.gsoDgrams, rx.gro, rx.groReads, rx.groDgrams)
			if on && tx.gso != (tx.gsoSends > 0) {
				t.Errorf("GSO on: %v, but %d segmented sends", tx.gso, tx.gsoSends)
			}
			if on && tx.gso && rx.gro && rx.groReads == 0 {
				t.Error("GSO and GRO on, but nothing arrived coalesced")
			}
			if !on && tx.gsoSends+rx.groReads > 0 {
				t.Errorf("offloads off, but %d segmented sends, %d coalesced reads", tx.gsoSends, rx.groReads)
			}
		})
	}
}

// readAll reads want datagrams from c through m (GRO or not), all from
// the address from.
func readAll(t *testing.T, c *net.UDPConn, m *rawMmsgIO, from netip.AddrPort, want int) [][]byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got [][]byte
	bufs := make([]*[groBufSize]byte, groBufs)
	for i := range bufs {
		bufs[i] = new([groBufSize]byte)
	}
	msgs := make([]rxMsg, groBufs*groSegs)
	for len(got) < want {
		var n int
		var err error
		if m.gro {
			n, err = m.readGRO(bufs, msgs)
		} else {
			for i := range msgs[:maxBatch] {
				msgs[i].buf = make([]byte, recvBufferSize)
			}
			n, err = m.read(msgs[:maxBatch])
		}
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		for _, x := range msgs[:n] {
			if x.addr.Addr().Unmap() != from.Addr() || x.addr.Port() != from.Port() {
				t.Fatalf("datagram from %v, want %v", x.addr, from)
			}
			got = append(got, bytes.Clone(x.buf[:x.n]))
		}
	}
	return got
}

func checkDatagrams(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d datagrams, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: datagram %d is %d bytes (%x...), want %d (%x...)", what, i, len(got[i]), got[i][:min(4, len(got[i]))], len(want[i]), want[i][:min(4, len(want[i]))])
		}
	}
}

// TestGROControlTruncated: a coalesced buffer whose segment size did not
// fit in the control buffer is dropped, never taken for one datagram.
func TestGROControlTruncated(t *testing.T) {
	a := listenUDP(t, "udp4", "127.0.0.1:0")
	b := listenUDP(t, "udp4", "127.0.0.1:0")
	tx, rx := rawIO(t, a, false, true, false), rawIO(t, b, false, false, true)
	if !tx.gso || !rx.gro {
		t.Skip("no UDP GSO or GRO in this kernel")
	}
	rx.rctlLen = 8 // less than a cmsghdr
	msgs, _, _ := offloadBatch(loopback(b), loopback(a))
	tx.write(msgs[:30]) // one run of 30
	lone := []byte("lone")
	tx.write([]txMsg{{b: lone, addr: loopback(b)}})
	got := readAll(t, b, rx, loopback(a), 1)
	checkDatagrams(t, "GRO socket", got, [][]byte{lone})
}

// TestGSORefused: a run the kernel refuses to segment but takes datagram
// by datagram (a socket without UDP checksums, SO_NO_CHECK, cannot
// segment) is sent that way, and segmentation stays off; a run refused
// either way (port 0) is skipped and leaves segmentation on.
func TestGSORefused(t *testing.T) {
	a := listenUDP(t, "udp4", "127.0.0.1:0")
	b := listenUDP(t, "udp4", "127.0.0.1:0")
	tx, rx := rawIO(t, a, false, true, false), rawIO(t, b, false, false, false)
	if !tx.gso {
		t.Skip("no UDP GSO in this kernel")
	}
	to := loopback(b)
	run := func(to netip.AddrPort, first byte) ([]txMsg, [][]byte) {
		var msgs []txMsg
		var want [][]byte
		for i := range 5 {
			p := bytes.Repeat([]byte{first + byte(i)}, 100)
			msgs = append(msgs, txMsg{b: p, addr: to})
			want = append(want, p)
		}
		return msgs, want
	}
	lost, _ := run(netip.AddrPortFrom(to.Addr(), 0), 'a')
	msgs, want := run(to, 'A')
	tx.write(append(lost, msgs...))
	checkDatagrams(t, "after a refused run", readAll(t, b, rx, loopback(a), len(want)), want)
	if !tx.gso || tx.gsoSends != 1 {
		t.Fatalf("after a run refused with and without GSO: gso %v, %d segmented sends; want on, 1", tx.gso, tx.gsoSends)
	}

	rc, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_NO_CHECK, 1)
	})
	if err != nil {
		t.Skipf("SO_NO_CHECK: %v", err)
	}
	msgs, want = run(to, 'a')
	tx.write(msgs)
	checkDatagrams(t, "after a refused segmented send", readAll(t, b, rx, loopback(a), len(want)), want)
	if tx.gso {
		t.Fatal("GSO still on after the kernel refused it")
	}
	msgs, want = run(to, 'k')
	tx.write(msgs)
	checkDatagrams(t, "with GSO off", readAll(t, b, rx, loopback(a), len(want)), want)
	if tx.gsoSends != 1 {
		t.Fatalf("%d segmented sends, want the 1 before", tx.gsoSends)
	}
}

// TestTransferNoOffload: streams work over sockets without the offloads,
// and between one with them and one without (a GSO sender, a receiver
// that gets the datagrams one by one, as libudx does).
func TestTransferNoOffload(t *testing.T) {
	plain := func(t *testing.T) *Socket {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		u := New()
		s, err := u.newSocket(pc, rxBatchCount, rxBatchSize, false)
		if err != nil {
			u.Close()
			t.Fatal(err)
		}
		s.ownU = true
		t.Cleanup(func() { s.Close() })
		u.do(func(int64) error {
			if m, ok := s.bio.(*rawMmsgIO); ok {
				m.gso = false
			}
			return nil
		})
		if s.gro != nil {
			t.Fatal("GRO on although not asked for")
		}
		return s
	}
	t.Run("both", func(t *testing.T) {
		a, b := pair(t, plain(t), plain(t), 1, 2)
		transfer(t, a, b, 8<<20, 60*time.Second)
	})
	t.Run("one", func(t *testing.T) {
		a, b := pair(t, udpSocket(t), plain(t), 1, 2)
		transfer(t, a, b, 8<<20, 60*time.Second)
	})
}

func FuzzGROSegSize(f *testing.F) {
	var b cmsgBuf
	n := putUDPCmsg(b.bytes(), unix.UDP_GRO, 1200, 4)
	f.Add(bytes.Clone(b.bytes()[:n]))
	two := make([]byte, 64)
	m := putUDPCmsg(two, unix.UDP_SEGMENT, 99, 2)
	m += putUDPCmsg(two[m:], unix.UDP_GRO, 1472, 4)
	f.Add(two[:m])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, ctl []byte) {
		seg := groSegSize(ctl, len(ctl))
		if seg < 0 {
			t.Fatalf("segment size %d", seg)
		}
		if groSegSize(ctl, len(ctl)+1) != 0 || groSegSize(ctl, -1) != 0 {
			t.Fatal("a length beyond the buffer was read")
		}
		// What the encoder writes decodes back.
		var b cmsgBuf
		v := uint32(len(ctl)) * 37
		if got := groSegSize(b.bytes(), putUDPCmsg(b.bytes(), unix.UDP_GRO, v, 4)); got != int(v) {
			t.Fatalf("encoded %d, decoded %d", v, got)
		}
	})
}
