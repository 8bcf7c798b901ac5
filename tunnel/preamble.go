package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// preamble is what a keytunnel client writes first on a peer connection. It
// starts with a NUL byte, which no text protocol sends first, and is 16
// bytes long, so a raw client's first bytes match it only by design.
const preamble = "\x00keytunnel/mux1\n"

// The reply to the preamble: the 3 bytes of replyMagic, one status byte,
// one length byte, then that many bytes of UTF-8 reason. The client waits
// for it before starting yamux, so that a refusal is an error it can show
// rather than a silent EOF; that costs one round trip per peer session, not
// per stream. The magic lets a client tell a keytunnel reply from a raw
// server's banner.
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

// clientHandshake writes pre (preamble or preamble2) and reads the
// server's reply.
func clientHandshake(c net.Conn, pre string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, pre); err != nil {
		return fmt.Errorf("tunnel: sending preamble: %w", err)
	}
	var hdr [len(replyMagic) + 2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: connection closed before the reply", ErrProtocol)
		}
		if isTimeout(err) {
			return fmt.Errorf("%w: no reply within %v", ErrProtocol, timeout)
		}
		return fmt.Errorf("tunnel: reading reply: %w", err)
	}
	if string(hdr[:len(replyMagic)]) != replyMagic {
		return fmt.Errorf("%w (a raw server such as hypertele-server? use raw mode): got %q", ErrProtocol, hdr[:])
	}
	reason := make([]byte, hdr[len(hdr)-1])
	if _, err := io.ReadFull(c, reason); err != nil {
		return fmt.Errorf("%w: short reply: %v", ErrProtocol, err)
	}
	switch hdr[len(replyMagic)] {
	case replyOK:
		return nil
	case replyRefused:
		if len(reason) == 0 {
			return ErrRefused
		}
		return fmt.Errorf("%w: %s", ErrRefused, reason)
	}
	return fmt.Errorf("%w: got %q", ErrProtocol, append(hdr[:], reason...))
}

// detect reads the first bytes of a peer connection, until they either are
// a preamble (version 1 for preamble, 2 for preamble2) or cannot become
// one, or until the read deadline the caller set. What was read is
// returned, with version 0, so that a raw peer's bytes can be replayed to
// the target. eof reports that the peer already half-closed.
func detect(c net.Conn) (version int, got []byte, eof bool, err error) {
	buf := make([]byte, len(preamble))
	n := 0
	for n < len(buf) {
		m, rerr := c.Read(buf[n:])
		n += m
		if !bytes.Equal(buf[:n], []byte(preamble[:n])) && !bytes.Equal(buf[:n], []byte(preamble2[:n])) {
			return 0, buf[:n], false, nil
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return 0, buf[:n], true, nil
		case isTimeout(rerr):
			// Silence (or a partial preamble, which a keytunnel client
			// never leaves hanging): a raw client, maybe of a protocol in
			// which the server speaks first.
			return 0, buf[:n], false, nil
		default:
			return 0, nil, false, rerr
		}
	}
	if string(buf) == preamble2 {
		return 2, nil, false, nil
	}
	return 1, nil, false, nil
}
