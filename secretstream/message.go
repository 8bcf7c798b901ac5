package secretstream

import (
	"fmt"
	"net"
)

// Message-level I/O for protocols that need @hyperswarm/secret-stream's
// frame boundaries (protomux: every protomux frame is exactly one
// secret-stream message, Node's one write() = one 'data' event). Read and
// Write are byte-stream oriented (Write splits long or unaligned buffers
// into several frames, Read may return part of a frame), so such protocols
// use ReadMessage and WriteMessage instead. Do not mix Read and
// ReadMessage on one Conn: ReadMessage first returns whatever a previous
// Read left of a frame, as one message.

// ReadMessage reads the next non-empty decrypted message (one frame) and
// returns it appended to buf[:0]; pass nil to get a fresh slice. Empty
// frames (keepalives) are skipped, as in Read. Errors are those of Read.
func (c *Conn) ReadMessage(buf []byte) ([]byte, error) {
	if err := c.handshake(); err != nil {
		return nil, err
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.plain) == 0 {
		if c.rerr != nil {
			return nil, c.rerr
		}
		if c.isClosed() {
			return nil, net.ErrClosed
		}
		if err := c.readRecord(); err != nil {
			return nil, err
		}
	}
	out := append(buf[:0], c.plain...)
	c.plain = nil
	return out, nil
}

// WriteMessage encrypts m as exactly one frame, whatever WriteFrameSize
// says; m may be up to MaxWritePayload bytes. An empty m is sent as an
// empty frame, which the peer drops. Errors are those of Write.
func (c *Conn) WriteMessage(m []byte) error {
	if len(m) > MaxWritePayload {
		return fmt.Errorf("%w: message of %d bytes, at most %d fit in a frame", ErrFrameTooLarge, len(m), MaxWritePayload)
	}
	if err := c.handshake(); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writable(); err != nil {
		return err
	}
	if len(m) > c.writeFrame {
		// A larger buffer for this one frame; a partial write that a
		// deadline cut short keeps referencing it through c.pending.
		saved := c.wbuf
		c.wbuf = make([]byte, headroom+len(m), headroom+len(m)+16)
		defer func() { c.wbuf = saved }()
	}
	_, err := c.writeFrameLocked(m)
	return err
}
