package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// preamble is what a keytunnel client writes first on a peer connection. It
// starts with a NUL byte, which no text protocol sends first, and is 16
// bytes long, so a raw client's first bytes match it only by design.
const preamble = "\x00keytunnel/mux1\n"

// probePreamble starts a probe connection (keytunnel doctor's throughput
// sample, see probe.go) instead of a mux session. It shares the first 11
// bytes with preamble. A client sends it only to a server whose mux reply
// listed featureProbe: an older server would take it for a raw client and
// pass it to its target.
const probePreamble = "\x00keytunnel/prb1\n"

// featureProbe, in an OK reply's reason, says the server serves
// probePreamble. Older clients read and ignore an OK reply's reason.
const featureProbe = "probe1"

// lanePreamble opens a second peer connection for a mux session, its
// interactive lane (lanes.go): these 16 bytes, then the session's 16-byte
// lane token. It shares the first 11 bytes with preamble. A client sends it
// only to a server whose OK reply offered featureLanes: an older server
// would take it for a raw client.
const lanePreamble = "\x00keytunnel/lan1\n"

// featureLanes, in an OK reply's reason, offers the session an
// interactive lane: "lanes1=" and the token in 32 hex digits. An OK
// reply's reason is a space-separated list of features.
const featureLanes = "lanes1"

// laneTokenSize is the length of the token that ties a lane to its
// session; 16 random bytes cannot be guessed, and the lane must also come
// from the session's own key.
const laneTokenSize = 16

// feature looks f up in an OK reply's reason: ok if it is listed, alone
// or as f=value.
func feature(reason, f string) (value string, ok bool) {
	for _, w := range strings.Fields(reason) {
		if w == f {
			return "", true
		}
		if v, found := strings.CutPrefix(w, f+"="); found {
			return v, true
		}
	}
	return "", false
}

// peerKind is what detect made of a peer's first bytes.
type peerKind int

const (
	kindRaw   peerKind = iota
	kindMux            // preamble
	kindMux2           // preamble2: streams carry a stream header (udpwire.go)
	kindProbe          // probePreamble
	kindLane           // lanePreamble: a session's interactive lane
)

// The reply to the preamble: the 3 bytes of replyMagic, one status byte,
// one length byte, then that many bytes of UTF-8 reason. The server sends
// it before its first yamux frame, so that a refusal is an error the
// client can show rather than a silent EOF; the client reads it in front
// of those frames (replyConn) but does not wait for it to start yamux.
// The magic lets a client tell a keytunnel reply from a raw server's
// banner.
const (
	replyMagic   = "\x00kt"
	replyOK      = 0
	replyRefused = 1
)

func writeReply(c net.Conn, status byte, reason string) error {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	b := append([]byte(replyMagic), status, byte(len(reason)))
	_, err := c.Write(append(b, reason...))
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// handshakeWith writes pre (preamble, preamble2 or probePreamble) and
// reads the server's reply; features is an OK reply's reason
// (featureProbe, or empty from older servers).
func handshakeWith(c net.Conn, pre string, timeout time.Duration) (features string, _ error) {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if err := writePreamble(c, pre); err != nil {
		return "", err
	}
	return readReply(c, timeout)
}

func writePreamble(c net.Conn, pre string) error {
	if _, err := io.WriteString(c, pre); err != nil {
		return fmt.Errorf("tunnel: sending preamble: %w", err)
	}
	return nil
}

// readReply reads the server's reply to a preamble within the read
// deadline the caller set, timeout long (for the error message).
func readReply(c net.Conn, timeout time.Duration) (features string, _ error) {
	var hdr [len(replyMagic) + 2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return "", fmt.Errorf("%w: connection closed before the reply", ErrProtocol)
		}
		if isTimeout(err) {
			return "", fmt.Errorf("%w: no reply within %v", ErrProtocol, timeout.Round(time.Millisecond))
		}
		return "", fmt.Errorf("tunnel: reading reply: %w", err)
	}
	if string(hdr[:len(replyMagic)]) != replyMagic {
		return "", fmt.Errorf("%w (a raw server such as hypertele-server? use raw mode): got %q", ErrProtocol, hdr[:])
	}
	reason := make([]byte, hdr[len(hdr)-1])
	if _, err := io.ReadFull(c, reason); err != nil {
		return "", fmt.Errorf("%w: short reply: %v", ErrProtocol, err)
	}
	switch hdr[len(replyMagic)] {
	case replyOK:
		return string(reason), nil
	case replyRefused:
		if len(reason) == 0 {
			return "", ErrRefused
		}
		return "", fmt.Errorf("%w: %s", ErrRefused, reason)
	}
	return "", fmt.Errorf("%w: got %q", ErrProtocol, append(hdr[:], reason...))
}

// replyConn is a client's peer connection under a session that started
// before the server's reply to its preamble came: the first Read reads the
// reply, and every Read then fails with its error unless it was OK. A mux
// client thus sends its first streams' frames right behind the preamble
// and saves the round trip that waiting for the reply took on every first
// dial; a server that refuses (or is not keytunnel) discards them, as it
// would discard anything after the preamble. One reader at a time: the
// laneConn's lane B reader.
type replyConn struct {
	net.Conn
	deadline time.Time     // for the reply
	onOK     func()        // runs on an OK reply, before any byte after it is read
	once     sync.Once     // reads the reply
	done     chan struct{} // closed once features or err is set
	features string        // an OK reply's reason
	err      error         // why there was no OK reply
}

func newReplyConn(c net.Conn, deadline time.Time, onOK func()) *replyConn {
	return &replyConn{Conn: c, deadline: deadline, onOK: onOK, done: make(chan struct{})}
}

func (r *replyConn) Read(p []byte) (int, error) {
	r.once.Do(func() {
		r.Conn.SetReadDeadline(r.deadline)
		r.features, r.err = readReply(r.Conn, time.Until(r.deadline))
		r.Conn.SetReadDeadline(time.Time{})
		if r.err == nil && r.onOK != nil {
			// Before the server's first frame reaches a stream: "peer
			// session up" and the connected event come before any of
			// the peer's data does.
			r.onOK()
		}
		close(r.done)
	})
	if r.err != nil {
		return 0, r.err
	}
	return r.Conn.Read(p)
}

// result waits for the reply, until ctx ends.
func (r *replyConn) result(ctx context.Context) (features string, _ error) {
	select {
	case <-r.done:
		return r.features, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// detect reads the first bytes of a peer connection, until they either are
// one of the preambles (kindMux, kindMux2, kindProbe, kindLane) or cannot become
// one, or until the read deadline the caller set. What was read is
// returned, with kindRaw, so that a raw peer's bytes can be replayed to the
// target. eof reports that the peer already half-closed.
func detect(c net.Conn) (kind peerKind, got []byte, eof bool, err error) {
	buf := make([]byte, len(preamble))
	n := 0
	for n < len(buf) {
		m, rerr := c.Read(buf[n:])
		n += m
		if !bytes.Equal(buf[:n], []byte(preamble[:n])) && !bytes.Equal(buf[:n], []byte(preamble2[:n])) &&
			!bytes.Equal(buf[:n], []byte(probePreamble[:n])) && !bytes.Equal(buf[:n], []byte(lanePreamble[:n])) {
			return kindRaw, buf[:n], false, nil
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return kindRaw, buf[:n], true, nil
		case isTimeout(rerr):
			// Silence (or a partial preamble, which a keytunnel client
			// never leaves hanging): a raw client, maybe of a protocol in
			// which the server speaks first.
			return kindRaw, buf[:n], false, nil
		default:
			return kindRaw, nil, false, rerr
		}
	}
	switch string(buf) {
	case preamble2:
		return kindMux2, nil, false, nil
	case probePreamble:
		return kindProbe, nil, false, nil
	case lanePreamble:
		return kindLane, nil, false, nil
	}
	return kindMux, nil, false, nil
}
