package secretstream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

// Frame and write limits.
const (
	// MaxFrame is the largest frame body the u24 length prefix can carry
	// (Node's MAX_ATOMIC_WRITE). It is the default receive bound.
	MaxFrame = 1<<24 - 1
	// MaxWritePayload is the largest plaintext that fits in one frame.
	MaxWritePayload = MaxFrame - Overhead
	// DefaultWriteFrameSize is the default largest plaintext a Conn puts in
	// one frame; longer writes are split.
	DefaultWriteFrameSize = 64 << 10

	headerBodyLen     = 32 + HeaderSize // stream id ‖ secretstream header
	maxHandshakeFrame = 65535           // noise-handshake 4.2.0 rejects larger messages
	initialReadBuf    = 72 << 10        // holds a default-size frame (65556 bytes) whole
	shrinkReadBuf     = 1 << 20         // an empty read buffer above this is released
	splitThreshold    = 1024            // see chunkLen
)

// frameReader splits the raw byte stream into frames
//
//	len u24 LE ‖ body[len]
//
// keeping its state across calls, so frames may span raw reads, one read
// may hold many frames, and a read deadline can interrupt it anywhere.
//
// Memory bound: the buffer never grows on the strength of a length prefix
// alone. It starts at initialReadBuf (72 KiB) and only doubles when it is
// full and the current frame is still incomplete, up to the frame's size.
// So a peer that announces a 16 MiB frame and sends nothing costs nothing
// extra, and a frame of n bytes costs at most headroom + max(72 KiB,
// 2·(received bytes)) ≤ headroom + 2·(3+n), never more than 2·(3+limit).
// An empty buffer above 1 MiB is released.
//
// buf[:headroom] never holds stream data, so every frame body has at least
// 63 bytes in front of it that the in-place decryption may use as scratch
// (openInPlace): those bytes are either that headroom or frames already
// processed.
type frameReader struct {
	buf    []byte
	r, w   int   // unprocessed bytes are buf[r:w]
	err    error // raw read error, returned once buffered frames are used up
	frames int64 // frames returned so far
	// total counts the bytes read from raw; total − (w − r) is the raw
	// stream offset of the end of the last frame returned.
	total int64
}

// next returns the bounds of the next frame's body in buf, reading from
// raw as needed. Bodies longer than limit fail with ErrFrameTooLarge as
// soon as the prefix is seen. A timeout from raw is returned as is and
// leaves the reader consistent; other raw errors are kept and returned
// after the frames already buffered (io.EOF inside a frame becomes
// ErrTruncated).
func (f *frameReader) next(raw io.Reader, limit int) (start, end int, err error) {
	for {
		avail := f.w - f.r
		need := 3
		if avail >= 3 {
			n := f.pendingLen()
			if n > limit {
				return 0, 0, fmt.Errorf("%w (%d > %d)", ErrFrameTooLarge, n, limit)
			}
			need = 3 + n
			if avail >= need {
				start = f.r + 3
				f.r += need
				f.frames++
				return start, start + n, nil
			}
		}
		if f.err != nil {
			if f.err == io.EOF && avail > 0 {
				return 0, 0, fmt.Errorf("%w (%d of %d bytes)", ErrTruncated, avail, need)
			}
			return 0, 0, f.err
		}
		f.makeRoom(need)
		k, err := raw.Read(f.buf[f.w:])
		f.w += k
		f.total += int64(k)
		if err != nil {
			if isTimeout(err) {
				if k == 0 {
					return 0, 0, err
				}
				continue // use the bytes; the next Read reports the timeout
			}
			f.err = err
		}
	}
}

// pendingLen is the length prefix at the read position, or -1 when fewer
// than 3 bytes are buffered.
func (f *frameReader) pendingLen() int {
	if f.w-f.r < 3 {
		return -1
	}
	b := f.buf[f.r:]
	return int(b[0]) | int(b[1])<<8 | int(b[2])<<16
}

// makeRoom makes sure there is space to read into, given that the current
// frame needs `need` bytes from f.r.
func (f *frameReader) makeRoom(need int) {
	if f.r == f.w { // nothing buffered: rewind, maybe release a big buffer
		f.r, f.w = headroom, headroom
		if len(f.buf) > headroom+shrinkReadBuf {
			f.buf = nil
		}
	}
	if f.buf == nil {
		f.buf = make([]byte, headroom+initialReadBuf)
		f.r, f.w = headroom, headroom
	}
	if f.r+need <= len(f.buf) && f.w < len(f.buf) {
		return // the frame fits where it is
	}
	if f.r > headroom { // move the partial frame to the front
		f.w = headroom + copy(f.buf[headroom:], f.buf[f.r:f.w])
		f.r = headroom
	}
	if f.w < len(f.buf) {
		return
	}
	// Full and the frame is still incomplete: double, capped at the frame.
	size := len(f.buf) - headroom
	nb := make([]byte, headroom+min(2*size, max(need, size+1)))
	f.w = headroom + copy(nb[headroom:], f.buf[f.r:f.w])
	f.r = headroom
	f.buf = nb
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func appendU24(b []byte, n int) []byte { return append(b, byte(n), byte(n>>8), byte(n>>16)) }

func putU24(b []byte, n int) { b[0], b[1], b[2] = byte(n), byte(n>>8), byte(n>>16) }
