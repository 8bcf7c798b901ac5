package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// sendChunked writes in to c in pieces of chunk bytes (at least 1), then
// closes c. It stops at the first failed write: the reader may stop
// reading before the end.
func sendChunked(c net.Conn, in []byte, chunk uint8) {
	defer c.Close()
	step := max(int(chunk), 1)
	for len(in) > 0 {
		n := min(step, len(in))
		if _, err := c.Write(in[:n]); err != nil {
			return
		}
		in = in[n:]
	}
}

// FuzzDetect feeds a peer connection's first bytes, in fuzzed pieces, to
// detect: it must report a keytunnel client of each kind (mux1, mux2,
// probe, lane) exactly when the bytes start with that preamble, and otherwise
// hand back for replay a prefix of them that either has left every
// preamble or is all of them (then with eof).
func FuzzDetect(f *testing.F) {
	f.Add([]byte(preamble), uint8(16))
	f.Add([]byte(preamble+"yamux bytes"), uint8(1))
	f.Add([]byte(preamble[:7]), uint8(3))
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"), uint8(4))
	f.Add([]byte("\x00keytunnel/mux2\n"), uint8(5))
	f.Add([]byte(preamble2+"yamux bytes"), uint8(2))
	f.Add([]byte(preamble2+"yamux bytes"), uint8(2))
	f.Add([]byte(probePreamble+"p"), uint8(3))
	f.Add([]byte("\x00keytunnel/prb"), uint8(2))
	f.Add([]byte(lanePreamble+"token"), uint8(3))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		c, peer := net.Pipe()
		defer c.Close()
		go sendChunked(peer, in, chunk)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		kind, got, eof, err := detect(c)
		if err != nil {
			t.Fatalf("detect: %v", err)
		}
		want := kindRaw
		switch {
		case bytes.HasPrefix(in, []byte(preamble)):
			want = kindMux
		case bytes.HasPrefix(in, []byte(preamble2)):
			want = kindMux2
		case bytes.HasPrefix(in, []byte(probePreamble)):
			want = kindProbe
		case bytes.HasPrefix(in, []byte(lanePreamble)):
			want = kindLane
		}
		if kind != want {
			t.Fatalf("%q: kind %v, want %v", in, kind, want)
		}
		if kind != kindRaw {
			if got != nil || eof {
				t.Fatalf("mux with got %q eof %v", got, eof)
			}
			return
		}
		if !bytes.HasPrefix(in, got) || len(got) > len(preamble) {
			t.Fatalf("%q: replay %q is not a prefix of it", in, got)
		}
		isPrefix := strings.HasPrefix(preamble, string(got)) || strings.HasPrefix(preamble2, string(got)) ||
			strings.HasPrefix(probePreamble, string(got)) || strings.HasPrefix(lanePreamble, string(got))
		switch {
		case !eof && len(got) == 0:
			t.Fatalf("%q: neither bytes nor eof", in)
		case eof && (!isPrefix || !bytes.Equal(got, in)):
			t.Fatalf("%q: eof with replay %q", in, got)
		case !eof && isPrefix:
			t.Fatalf("%q: stopped at %q, which may still become a preamble", in, got)
		}
	})
}

// replyBytes is what writeReply sends.
func replyBytes(t testing.TB, status byte, reason string) []byte {
	c, peer := net.Pipe()
	defer c.Close()
	go func() {
		writeReply(peer, status, reason)
		peer.Close()
	}()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzClientHandshake answers the client's preamble with fuzzed bytes in
// fuzzed pieces. Only a complete reply with status OK succeeds and only
// REFUSED gives ErrRefused (with the reason); everything else is
// ErrProtocol. A complete reply re-encodes (writeReply) to the bytes read.
func FuzzClientHandshake(f *testing.F) {
	f.Add(replyBytes(f, replyOK, ""), uint8(5))
	f.Add(replyBytes(f, replyOK, featureProbe), uint8(4))
	f.Add(replyBytes(f, replyRefused, ""), uint8(1))
	f.Add(replyBytes(f, replyRefused, "key 00ff is not in the allow list"), uint8(7))
	f.Add(replyBytes(f, replyRefused, strings.Repeat("r", 300)), uint8(0))
	f.Add(replyBytes(f, 2, "x"), uint8(2))
	f.Add(append(replyBytes(f, replyOK, ""), "yamux"...), uint8(3))
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"), uint8(9))
	f.Add([]byte(replyMagic), uint8(1))
	f.Fuzz(func(t *testing.T, reply []byte, chunk uint8) {
		c, peer := net.Pipe()
		defer c.Close()
		heard := make(chan []byte, 1)
		go func() {
			b := make([]byte, len(preamble))
			n, _ := io.ReadFull(peer, b)
			heard <- b[:n]
			sendChunked(peer, reply, chunk)
		}()
		features, err := handshakeWith(c, preamble, 10*time.Second)
		if b := <-heard; string(b) != preamble {
			t.Fatalf("client sent %q", b)
		}
		hdr := len(replyMagic) + 2
		complete := len(reply) >= hdr && string(reply[:len(replyMagic)]) == replyMagic && len(reply) >= hdr+int(reply[hdr-1])
		if !complete {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("%q: %v, want ErrProtocol", reply, err)
			}
			return
		}
		status, reason := reply[len(replyMagic)], string(reply[hdr:hdr+int(reply[hdr-1])])
		switch {
		case status == replyOK && (err != nil || features != reason):
			t.Fatalf("%q: %v, features %q, want %q", reply, err, features, reason)
		case status == replyRefused && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), reason)):
			t.Fatalf("%q: %v, want ErrRefused with %q", reply, err, reason)
		case status != replyOK && status != replyRefused && !errors.Is(err, ErrProtocol):
			t.Fatalf("%q: %v, want ErrProtocol", reply, err)
		}
		if re := replyBytes(t, status, reason); !bytes.Equal(re, reply[:hdr+len(reason)]) {
			t.Fatalf("reply %q re-encodes to %q", reply, re)
		}
	})
}
