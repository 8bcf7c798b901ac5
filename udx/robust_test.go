package udx

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"testing"
	"time"
)

// rawPeer is a plain UDP socket that speaks hand-made UDX packets.
func rawPeer(t *testing.T) *net.UDPConn {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func sendRaw(t *testing.T, pc *net.UDPConn, to *Socket, b []byte) {
	if _, err := pc.WriteToUDPAddrPort(b, addrOf(to)); err != nil {
		t.Fatal(err)
	}
}

func TestHostilePackets(t *testing.T) {
	sock := udpSocket(t)
	raw := rawPeer(t)
	st, _ := sock.NewStream(5, nil)
	st.Connect(sock, 6, raw.LocalAddr().(*net.UDPAddr).AddrPort())
	r := rand.New(rand.NewPCG(1, 2))
	pkt := func(typ uint8, seq, ack uint32, sacks []SACKBlock, payload []byte) []byte {
		h := Header{Type: typ, ID: 5, RWnd: 1 << 20, Seq: seq, Ack: ack}
		return AppendPacket(nil, &h, sacks, payload)
	}
	var hostile [][]byte
	for i := 0; i < 2000; i++ {
		b := make([]byte, r.IntN(100))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if len(b) >= 2 && i%2 == 0 {
			b[0], b[1] = 0xff, 0x01
			if len(b) >= 8 {
				binary.LittleEndian.PutUint32(b[4:], 5)
			}
			if len(b) >= 3 {
				// A DESTROY with the right id resets the stream by design
				// (tested below); keep the junk to everything else.
				b[2] &^= FlagDestroy
			}
		}
		hostile = append(hostile, b)
	}
	hostile = append(hostile,
		pkt(FlagData, 0, 0, nil, []byte("ok"))[:HeaderSize-1],                     // truncated
		pkt(FlagSACK, 0, 0, []SACKBlock{{0, 0xffffffff}, {0x80000000, 5}}, nil),   // absurd SACK
		pkt(FlagSACK, 0, 0xfffffff0, []SACKBlock{{3, 2}}, nil),                    // ack far ahead
		pkt(FlagData, 0x7fffffff, 0, nil, []byte("far")),                          // seq far ahead
		pkt(FlagData|FlagEnd|FlagMessage|FlagHeartbeat, 1, 0, nil, []byte("mix")), // all flags
		pkt(FlagData, 3, 0, nil, make([]byte, 2000)),                              // oversize
	)
	hostile = append(hostile, pkt(FlagDestroy, 0xfffffff0, 0, nil, nil)) // stale DESTROY: ignored
	wrongID := pkt(FlagDestroy, 0, 0, nil, nil)
	binary.LittleEndian.PutUint32(wrongID[4:], 99)
	hostile = append(hostile, wrongID)
	for _, b := range hostile {
		sendRaw(t, raw, sock, b)
	}
	// Then legitimate data, replayed many times: delivered once, in order.
	for rep := 0; rep < 5; rep++ {
		sendRaw(t, raw, sock, pkt(FlagData, 0, 0, nil, []byte("hello ")))
		sendRaw(t, raw, sock, pkt(FlagData, 1, 0, nil, []byte("world")))
	}
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 11)
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "hello world" {
		t.Fatalf("%q %v", buf, err)
	}
	st.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := st.Read(buf); !errors.Is(err, errDeadline) {
		t.Fatalf("replay delivered again: %d %v", n, err)
	}
	// The wrong-id DESTROY and the junk were handed to ReadFrom, not the stream.
	if st.Err() != nil {
		t.Fatalf("stream died: %v", st.Err())
	}
	sock.SetReadDeadline(time.Now().Add(time.Second))
	if _, _, err := sock.ReadFrom(make([]byte, 2048)); err != nil {
		t.Fatalf("no plain datagram: %v", err)
	}
}

// A peer that never opens its window: the sender probes with HEARTBEATs,
// never sends data into the closed window, and its memory stays bounded by
// the send buffer; Write blocks and honours its deadline.
func TestZeroWindowForever(t *testing.T) {
	sock := udpSocket(t)
	raw := rawPeer(t)
	st, _ := sock.NewStream(5, &StreamOptions{SendBuffer: 64 << 10})
	st.Connect(sock, 6, raw.LocalAddr().(*net.UDPAddr).AddrPort())
	// Announce window 0.
	h := Header{Type: 0, ID: 5, RWnd: 0}
	sendRaw(t, raw, sock, AppendPacket(nil, &h, nil, nil))
	// Stats runs on the stream's loop, so once it counts the packet the
	// window is shut.
	for deadline := time.Now().Add(5 * time.Second); st.Stats().PacketsReceived == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the window-0 packet never reached the stream")
		}
		time.Sleep(time.Millisecond)
	}
	st.SetWriteDeadline(time.Now().Add(3 * time.Second))
	_, err := st.Write(make([]byte, 1<<20))
	if !errors.Is(err, errDeadline) {
		t.Fatalf("write: %v", err)
	}
	raw.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 2048)
	var data, hb int
	for {
		n, _, err := raw.ReadFromUDPAddrPort(b)
		if err != nil {
			break
		}
		if n >= HeaderSize && b[2]&FlagData != 0 {
			data++
		}
		if n >= HeaderSize && b[2]&FlagHeartbeat != 0 {
			hb++
			// Answer like libudx: an ACK that keeps the window shut.
			h := Header{Type: 0, ID: 5, RWnd: 0}
			sendRaw(t, raw, sock, AppendPacket(nil, &h, nil, nil))
		}
	}
	if data != 0 || hb == 0 {
		t.Fatalf("data packets %d into a zero window, heartbeats %d", data, hb)
	}
	// Now open the window: the queued data flows.
	h = Header{Type: 0, ID: 5, RWnd: 1 << 20, Seq: 1}
	sendRaw(t, raw, sock, AppendPacket(nil, &h, nil, nil))
	raw.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := raw.ReadFromUDPAddrPort(b)
	if err != nil || b[2]&FlagData == 0 {
		t.Fatalf("no data after window opened: %d %v", n, err)
	}
}

// Bounded memory under a flood of far-out-of-order data from a peer that
// ignores our window.
func TestOutOfOrderFloodBounded(t *testing.T) {
	sock := udpSocket(t)
	raw := rawPeer(t)
	st, _ := sock.NewStream(5, nil)
	st.Connect(sock, 6, raw.LocalAddr().(*net.UDPAddr).AddrPort())
	payload := make([]byte, 1100)
	var ms0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	for i := uint32(1); i < 40000; i++ {
		h := Header{Type: FlagData, ID: 5, RWnd: 1 << 20, Seq: i * 2} // every other seq: max blocks
		sendRaw(t, raw, sock, AppendPacket(nil, &h, nil, payload))
	}
	// A plain datagram after the flood: once ReadFrom has it, the socket
	// has processed (or the kernel dropped) everything sent before it.
	// Sent until one gets through, since a flooded socket drops some.
	marker := []byte("end of flood")
	got := make([]byte, 64)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("the socket never handed over the datagram after the flood")
		}
		sendRaw(t, raw, sock, marker)
		sock.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err := sock.ReadFrom(got); err == nil && string(got[:n]) == string(marker) {
			break
		}
	}
	// Every other seq is one block of one packet: the flood fills the
	// block list to its cap, and nothing beyond it is stored.
	var held, blocks int
	st.u.do(func(int64) error {
		for _, b := range st.ooo {
			if b != nil {
				held++
			}
		}
		blocks = len(st.blocks)
		return nil
	})
	if held != maxBlocks || blocks != maxBlocks {
		t.Fatalf("held %d packets in %d blocks, want %d in %d: the cap, reached", held, blocks, maxBlocks, maxBlocks)
	}
	if st.Err() != nil {
		t.Fatal(st.Err())
	}
}

// An unacknowledged stream gives up after libudx's RTO budget with
// ErrTimeout instead of retrying forever.
func TestRTOExhaustion(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~13 s")
	}
	sock := udpSocket(t)
	raw := rawPeer(t)
	st, _ := sock.NewStream(5, nil)
	st.Connect(sock, 6, raw.LocalAddr().(*net.UDPAddr).AddrPort())
	st.Write([]byte("anyone?"))
	select {
	case <-st.Done():
	case <-time.After(40 * time.Second):
		t.Fatal("no timeout")
	}
	if !errors.Is(st.Err(), ErrTimeout) {
		t.Fatalf("err %v", st.Err())
	}
}

// TestEndAckLost: the peer has ended and acked our data, then goes silent
// without acking our END, as a libudx peer does when its one final ack is
// lost: it closed right after sending it. The stream must close cleanly
// after a few retransmissions of the END instead of timing out; if our data
// went unacked, it must still time out.
func TestEndAckLost(t *testing.T) {
	for _, ackData := range []bool{true, false} {
		name := map[bool]string{true: "data-acked", false: "data-unacked"}[ackData]
		t.Run(name, func(t *testing.T) {
			if !ackData && testing.Short() {
				t.Skip("takes ~13 s")
			}
			sock := udpSocket(t)
			raw := rawPeer(t)
			st, _ := sock.NewStream(5, nil)
			st.Connect(sock, 6, raw.LocalAddr().(*net.UDPAddr).AddrPort())
			h := Header{Type: FlagData | FlagEnd, ID: 5, RWnd: 1 << 20, Seq: 0, Ack: 0}
			sendRaw(t, raw, sock, AppendPacket(nil, &h, nil, []byte("bye")))
			if b, err := io.ReadAll(st); err != nil || string(b) != "bye" {
				t.Fatalf("read %q %v", b, err)
			}
			st.Write([]byte("see you"))
			st.Close()
			start := time.Now()
			var ends int
			buf := make([]byte, 2048)
			stop := time.Now().Add(30 * time.Second)
		loop:
			for time.Now().Before(stop) {
				select {
				case <-st.Done():
					break loop
				default:
				}
				raw.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, err := raw.Read(buf)
				if err != nil {
					continue
				}
				var sacks [8]SACKBlock
				p, err := DecodePacket(buf[:n], sacks[:0])
				if err != nil || p.ID != 6 || p.Type&(FlagData|FlagEnd) == 0 {
					continue
				}
				if p.Type&FlagEnd != 0 {
					if len(p.Payload) != 0 {
						t.Fatalf("END carries %d data bytes; it must come in a packet of its own", len(p.Payload))
					}
					ends++
					continue
				}
				if ackData {
					a := Header{Type: 0, ID: 5, RWnd: 1 << 20, Seq: 1, Ack: p.Seq + 1}
					sendRaw(t, raw, sock, AppendPacket(nil, &a, nil, nil))
				}
			}
			select {
			case <-st.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("stream still open 30 s after Close")
			}
			el := time.Since(start)
			t.Logf("closed after %v with %v; END sent %d times", el, st.Err(), ends)
			if ackData {
				if st.Err() != nil {
					t.Fatalf("closed with %v, want a clean close", st.Err())
				}
				if ends < 1+endGiveUpRTOs || el > 10*time.Second {
					t.Fatalf("END sent %d times, closed after %v: want %d sends within 10 s", ends, el, 1+endGiveUpRTOs)
				}
			} else if !errors.Is(st.Err(), ErrTimeout) {
				t.Fatalf("data never acked, yet the stream closed with %v; want ErrTimeout", st.Err())
			}
		})
	}
}
