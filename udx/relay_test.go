package udx

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// a ⇄ (r1 relayTo r2, r2 relayTo r1) ⇄ b: a blind relay in the middle
// forwards packets with only the id rewritten; a and b see one stream.
func TestRelay(t *testing.T) {
	sa, sr, sb := udpSocket(t), udpSocket(t), udpSocket(t)
	a, _ := sa.NewStream(1, nil)
	b, _ := sb.NewStream(2, nil)
	r1, _ := relayBetween(t, sa, a, sr, sb, b)
	transfer(t, a, b, 4<<20, 30*time.Second)
	// Relayed streams hold no data of their own.
	if st := r1.Stats(); st.PacketsSent != 0 {
		t.Fatalf("relay sent its own packets: %+v", st)
	}
}

// relayBetween connects a (id 1 on sa) and b (id 2 on sb) through two
// relay streams on sr, ids 11 and 12, relaying to each other.
func relayBetween(t *testing.T, sa *Socket, a *Stream, sr *Socket, sb *Socket, b *Stream) (*Stream, *Stream) {
	t.Helper()
	r1, _ := sr.NewStream(11, nil)
	r2, _ := sr.NewStream(12, nil)
	a.Connect(sa, 11, addrOf(sr))
	r1.Connect(sr, 1, addrOf(sa))
	r2.Connect(sr, 2, addrOf(sb))
	b.Connect(sb, 12, addrOf(sr))
	if err := r1.RelayTo(r2); err != nil {
		t.Fatal(err)
	}
	if err := r2.RelayTo(r1); err != nil {
		t.Fatal(err)
	}
	return r1, r2
}

// Moving a stream to another socket mid-transfer (as hyperdht does after a
// holepunch) keeps the byte stream intact; the peer accepts packets from
// the new address through its firewall.
func TestChangeRemoteSocket(t *testing.T) {
	u := New()
	t.Cleanup(func() { u.Close() })
	s1, _ := u.NewSocket(mustUDP(t))
	s2, _ := u.NewSocket(mustUDP(t))
	sb := udpSocket(t)
	a, _ := u.NewStream(1, nil)
	b, _ := sb.NewStream(2, &StreamOptions{Firewall: func(*Stream, *Socket, netip.AddrPort) FirewallVerdict { return FirewallAccept }})
	a.Connect(s1, 2, addrOf(sb))
	b.Connect(sb, 1, addrOf(s1))
	payload := bytes.Repeat([]byte("abcdefghij"), 200000)
	done := make(chan error, 1)
	go func() {
		got, err := io.ReadAll(b)
		if err == nil && !bytes.Equal(got, payload) {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	a.Write(payload[:len(payload)/2])
	ch, err := a.ChangeRemote(s2, 2, addrOf(sb))
	if err != nil {
		t.Fatal(err)
	}
	// Both ends migrate, as hyperdht does after a holepunch.
	if _, err := b.ChangeRemote(sb, 1, addrOf(s2)); err != nil {
		t.Fatal(err)
	}
	a.Write(payload[len(payload)/2:])
	a.CloseWrite()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("remote change never completed")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := a.LocalAddr().(*net.UDPAddr).AddrPort(); got != addrOf(s2) {
		t.Fatalf("local addr %v", got)
	}
}

func TestKeepalive(t *testing.T) {
	sock := udpSocket(t)
	raw := rawPeer(t)
	st, _ := sock.NewStream(5, nil)
	st.Connect(sock, 6, raw.LocalAddr().(*net.UDPAddr).AddrPort())
	st.SetKeepalive(30 * time.Millisecond)
	raw.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 64)
	hb := 0
	for hb < 3 {
		n, _, err := raw.ReadFromUDPAddrPort(b)
		if err != nil {
			t.Fatalf("heartbeats %d: %v", hb, err)
		}
		if n == HeaderSize && b[2] == FlagHeartbeat {
			hb++
		}
	}
}

// A relayed pair moves to a direct path the way hyperdht upgrades a relayed
// connection: the relay dies with packets in flight, one side changes its
// remote to the peer's socket (the same socket that carried the relay's
// traffic), the peer's firewall sees the new address and follows, and the
// first side's PathConfirmed closes. The packets lost with the relay are
// retransmitted on the direct path, so the byte stream arrives whole.
func TestUpgradeFromRelay(t *testing.T) {
	sa, sr, sb := udpSocket(t), udpSocket(t), udpSocket(t)
	a, _ := sa.NewStream(1, nil)
	moved := make(chan netip.AddrPort, 1)
	var b *Stream
	b, _ = sb.NewStream(2, &StreamOptions{Firewall: func(_ *Stream, sk *Socket, from netip.AddrPort) FirewallVerdict {
		if sk == sb && from == addrOf(sa) {
			select {
			case moved <- from:
				go b.ChangeRemote(sb, 1, from)
			default:
			}
		}
		return FirewallAccept
	}})
	r1, r2 := relayBetween(t, sa, a, sr, sb, b)

	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	go func() {
		got, err := io.ReadAll(b)
		if err == nil && !bytes.Equal(got, payload) {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	a.Write(payload[:len(payload)/2])
	// The relay goes away with whatever it had in flight.
	r1.Destroy()
	r2.Destroy()
	if a.PathConfirmed() != nil {
		t.Fatal("PathConfirmed before any ChangeRemote")
	}
	if _, err := a.ChangeRemote(sa, 2, addrOf(sb)); err != nil {
		t.Fatal(err)
	}
	confirmed := a.PathConfirmed()
	a.Write(payload[len(payload)/2:])
	a.CloseWrite()
	select {
	case <-moved:
	case <-time.After(10 * time.Second):
		t.Fatal("the peer's firewall never saw the new address on its own socket")
	}
	select {
	case <-confirmed:
	case <-time.After(10 * time.Second):
		t.Fatal("the direct path was never confirmed")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("transfer stalled after the relay died: a=%+v b=%+v", a.Stats(), b.Stats())
	}
	if st := a.Stats(); st.Retransmits == 0 {
		t.Logf("no retransmits were needed (the relay had nothing in flight): %+v", st)
	}
}

// TestRelayHoldsEarlyPackets: a blind relay connects each of its streams
// on that side's first packet, so what one side sends before the other
// side's first packet finds the other end unconnected. It is held and
// forwarded once that end connects, not dropped (which would leave the
// sender waiting out its 1 s initial RTO).
func TestRelayHoldsEarlyPackets(t *testing.T) {
	sa, sr, sb := udpSocket(t), udpSocket(t), udpSocket(t)
	a, _ := sa.NewStream(1, nil)
	b, _ := sb.NewStream(2, nil)
	connect := func(*Stream, *Socket, netip.AddrPort) FirewallVerdict { return FirewallConnect }
	r1, err := sr.NewStream(11, &StreamOptions{Firewall: connect, RemoteID: 1})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := sr.NewStream(12, &StreamOptions{Firewall: connect, RemoteID: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.RelayTo(r2); err != nil {
		t.Fatal(err)
	}
	if err := r2.RelayTo(r1); err != nil {
		t.Fatal(err)
	}
	a.Connect(sa, 11, addrOf(sr))
	b.Connect(sb, 12, addrOf(sr))
	if _, err := a.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	// Until b's first packet, r2 has nowhere to send a's.
	for r1.Stats().PacketsReceived == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if _, err := b.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 5)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "early" {
		t.Fatalf("b read %q, %v", got, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a's early packet arrived %v after b's first packet: dropped and resent", d)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	got = make([]byte, 4)
	if _, err := io.ReadFull(a, got); err != nil || string(got) != "late" {
		t.Fatalf("a read %q, %v", got, err)
	}
	if st := a.Stats(); st.Retransmits != 0 {
		t.Errorf("a retransmitted: %+v", st)
	}
}
