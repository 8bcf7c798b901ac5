package tunnel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/keytunnel/keytunnel/internal/compact"
)

// preamble2 starts a mux session whose streams each begin with a stream
// header (see doc.go, "Streams of a mux2 session"). It differs from
// preamble only in its 15th byte, so detect tells them apart as it reads.
const preamble2 = "\x00keytunnel/mux2\n"

// Stream kinds of a stream header.
const (
	kindTCP = 0 // a TCP connection, bytes as they are
	kindUDP = 1 // a UDP flow: framed datagrams, and tagged secret-stream datagrams
)

// Bounds of a stream header: its body, and a service name within it.
const (
	maxHeaderBody  = 1024
	maxServiceName = 255
)

// streamHeader is what a client writes first on each stream of a mux2
// session. Its encoding:
//
//	len      uint16 little-endian: the length of body (at most 1024)
//	body:
//	  kind     compact uint: 0 TCP stream, 1 UDP flow
//	  service  compact string: the service's name, UTF-8, at most 255
//	           bytes (names a server accepts are at most 63, see
//	           CheckServiceName); empty is the key's default service
//	  flags    compact uint: bits for extensions the server must
//	           understand; a server refuses a stream with a bit it does not
//	           know. None is defined yet.
//	  flow     compact uint, kind 1 only: the flow id, below 2^32, unique
//	           among the session's open flows; it tags the flow's datagrams
//	  ...      anything further is for optional extensions, which a server
//	           that does not know them skips
//
// A compact uint is 1 byte below 0xfd, else 0xfd and a uint16, 0xfe and a
// uint32, 0xff and a uint64, all little-endian (compact-encoding).
type streamHeader struct {
	kind    uint64
	service string
	flags   uint64
	flow    uint32
}

func appendStreamHeader(b []byte, h streamHeader) []byte {
	body := compact.AppendUint(nil, h.kind)
	body = compact.AppendString(body, h.service)
	body = compact.AppendUint(body, h.flags)
	if h.kind == kindUDP {
		body = compact.AppendUint(body, uint64(h.flow))
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

// parseStreamHeader decodes a header body. Fields it does not know at the
// end are skipped; kinds, names and flags are checked by the caller, which
// answers a refusal for those, while a malformed body is an error here.
func parseStreamHeader(body []byte) (streamHeader, error) {
	d := compact.NewDecoder(body)
	var h streamHeader
	h.kind = d.Uint()
	h.service = d.String()
	h.flags = d.Uint()
	if h.kind == kindUDP {
		f := d.Uint()
		if f > 1<<32-1 {
			d.Fail(fmt.Errorf("flow id %d above 2^32-1", f))
		}
		h.flow = uint32(f)
	}
	if err := d.Err(); err != nil {
		return streamHeader{}, fmt.Errorf("%w: bad stream header: %v", ErrProtocol, err)
	}
	if len(h.service) > maxServiceName {
		return streamHeader{}, fmt.Errorf("%w: service name of %d bytes, at most %d", ErrProtocol, len(h.service), maxServiceName)
	}
	return h, nil
}

// readStreamHeader reads one header from a stream.
func readStreamHeader(r io.Reader) (streamHeader, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return streamHeader{}, fmt.Errorf("%w: stream header: %v", ErrProtocol, err)
	}
	n := binary.LittleEndian.Uint16(l[:])
	if n > maxHeaderBody {
		return streamHeader{}, fmt.Errorf("%w: stream header of %d bytes, at most %d", ErrProtocol, n, maxHeaderBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return streamHeader{}, fmt.Errorf("%w: stream header: %v", ErrProtocol, err)
	}
	return parseStreamHeader(body)
}

// The server answers each stream header, before anything else on the
// stream, with
//
//	status  uint8: 0 ok, 1 refused
//	len     uint8
//	reason  len bytes of UTF-8 (empty when ok)
//
// A refused stream is then closed (a FIN, so that the reason arrives). The
// client does not wait for the answer before sending: a TCP stream's
// bytes and a UDP flow's first datagrams follow the header at once.
func appendStreamReply(b []byte, status byte, reason string) []byte {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	b = append(b, status, byte(len(reason)))
	return append(b, reason...)
}

// readStreamReply returns nil for ok and an error wrapping ErrRefused with
// the server's reason for a refusal.
func readStreamReply(r io.Reader) error {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fmt.Errorf("%w: stream reply: %v", ErrProtocol, err)
	}
	reason := make([]byte, h[1])
	if _, err := io.ReadFull(r, reason); err != nil {
		return fmt.Errorf("%w: stream reply: %v", ErrProtocol, err)
	}
	switch h[0] {
	case replyOK:
		return nil
	case replyRefused:
		return fmt.Errorf("%w: %s", ErrRefused, reason)
	}
	return fmt.Errorf("%w: stream reply status %d", ErrProtocol, h[0])
}

// maxDatagram is the largest UDP payload (IPv6 without jumbograms; IPv4's
// is 65507), and so the largest frame either framing accepts.
const maxDatagram = 65535

// A framing reads and writes datagrams on a reliable stream.
//
// keytunnel's, on a UDP flow's stream after the header and reply:
//
//	len uint16 little-endian ‖ payload[len]
//
// holesail's (@holesail/hyper-cmd-lib-net, createUdpFramedProxy and
// pipeUdpFramedServer), on a raw peer connection, one per client address:
//
//	len uint32 big-endian ‖ payload[len]
type framing bool

const (
	ktFraming       framing = false
	holesailFraming framing = true
)

func (f framing) hdrLen() int {
	if f == holesailFraming {
		return 4
	}
	return 2
}

func (f framing) appendFrame(b, p []byte) []byte {
	if f == holesailFraming {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	} else {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(p)))
	}
	return append(b, p...)
}

var errFrameTooLarge = errors.New("tunnel: framed datagram above 65535 bytes")

// readFrame reads one datagram into buf (which must hold maxDatagram
// bytes) and returns it. A frame that ends early is io.ErrUnexpectedEOF;
// io.EOF means the stream ended between frames.
func (f framing) readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var h [4]byte
	hl := f.hdrLen()
	if _, err := io.ReadFull(r, h[:hl]); err != nil {
		return nil, err
	}
	var n uint32
	if f == holesailFraming {
		n = binary.BigEndian.Uint32(h[:])
	} else {
		n = uint32(binary.LittleEndian.Uint16(h[:]))
	}
	if n > maxDatagram {
		return nil, errFrameTooLarge
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf[:n], nil
}

// A flow's datagram on the secret-stream datagram channel (plaintext of
// SealDatagram):
//
//	type     uint8: 1 (a flow's datagram; other values are reserved and
//	         dropped)
//	flow     compact uint: the flow id from the flow's stream header
//	payload  the rest
const dgFlow = 1

// flowDatagramOverhead bounds what appendFlowDatagram adds to a payload.
const flowDatagramOverhead = 1 + 5

func appendFlowDatagram(b []byte, flow uint32, p []byte) []byte {
	b = append(b, dgFlow)
	b = compact.AppendUint(b, uint64(flow))
	return append(b, p...)
}

func parseFlowDatagram(b []byte) (flow uint32, p []byte, ok bool) {
	if len(b) < 2 || b[0] != dgFlow {
		return 0, nil, false
	}
	d := compact.NewDecoder(b[1:])
	f := d.Uint()
	if d.Err() != nil || f > 1<<32-1 {
		return 0, nil, false
	}
	return uint32(f), d.Rest(), true
}
