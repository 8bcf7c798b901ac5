package secretstream

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/secretstream/noise"
)

// RawConn is the reliable, ordered byte stream a Conn runs over: a TCP
// connection, one end of net.Pipe, a UDX stream. A Conn also uses, when the
// value has them, CloseWrite() error (half-close), SetDeadline,
// SetReadDeadline, SetWriteDeadline, LocalAddr and RemoteAddr.
type RawConn interface {
	io.Reader
	io.Writer
	io.Closer
}

type closeWriter interface{ CloseWrite() error }

type deadliner interface {
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

type addresser interface {
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
}

// authNoter is a raw connection that wants to know how much of what was
// read from it is authenticated: a udx stream follows its peer to a new
// address only once bytes from there are (udx.Stream.Authenticated).
// n counts the bytes read from the raw connection since New.
type authNoter interface{ Authenticated(n int64) }

// stallNotifier is a raw connection that says when data it was receiving
// stops coming (udx.Stream.OnReceiveStall): this side may have moved to a
// new address, and the peer follows only authenticated data from there,
// so the Conn sends a keepalive.
type stallNotifier interface{ OnReceiveStall(f func()) }

// Options configure a Conn.
type Options struct {
	// IsInitiator is the role: the initiator sends the first handshake
	// message. In hyperdht mode it must equal Handshake.IsInitiator.
	IsInitiator bool
	// KeyPair is the static key of the XX handshake. The zero value means a
	// fresh random key pair (Node does the same). Unused in hyperdht mode.
	KeyPair key.KeyPair
	// Handshake, when set, is the result of a handshake done elsewhere
	// (hyperdht's IK handshake): the Conn skips its own handshake and
	// starts with the header exchange.
	Handshake *noise.Result
	// KeepAlive, when positive, sends an empty encrypted frame after this
	// long without a write (hyperdht uses 5 s), and also at once when a
	// raw connection that can tell (a udx stream, OnReceiveStall) sees
	// the data it was receiving stop: if this side's address changed,
	// that authenticated frame from the new one is what moves the peer
	// there (see udx's FirewallRoam).
	KeepAlive time.Duration
	// MaxFrameSize bounds the length prefix of received frames; 0 means
	// MaxFrame, the protocol maximum, which is what Node can send.
	MaxFrameSize int
	// WriteFrameSize is the largest plaintext per frame this side sends; 0
	// means DefaultWriteFrameSize. It is rounded down to a multiple of 16
	// and capped at MaxWritePayload.
	WriteFrameSize int
	// SendHeader writes the header frame as soon as the handshake is done,
	// as Node does on start, instead of in front of the first frame. Use
	// it on buffered transports (udx) where the peer waits for our first
	// packet to learn our path; never on net.Pipe, where both sides would
	// block writing.
	SendHeader bool
	// Random supplies the ephemeral keys, the secretstream header and the
	// datagram counter; nil means crypto/rand.
	Random io.Reader
}

// Conn is an @hyperswarm/secret-stream connection over a RawConn. It
// implements net.Conn. The handshake runs on the first Read, Write or
// CloseWrite, or explicitly with Handshake.
type Conn struct {
	raw  RawConn
	opts Options
	rnd  io.Reader

	// Lifecycle.
	mu        sync.Mutex // guards closed and wg.Add
	closed    bool
	done      chan struct{} // closed by Close
	kaStop    chan struct{} // closed by CloseWrite
	kaOnce    sync.Once
	rawOnce   sync.Once
	rawErr    error
	wg        sync.WaitGroup
	epoch     time.Time
	lastWrite atomic.Int64  // nanoseconds since epoch (monotonic)
	lastRead  atomic.Int64  // of the latest frame read, likewise; 0: none yet
	stall     chan struct{} // the raw connection's receive stalled (stallNotifier)
	auth      authNoter     // raw, when it wants to know (nil otherwise)

	// Handshake results; written once under hsMu before hsDone is set.
	hsMu      sync.Mutex
	hsDone    atomic.Bool
	hsErr     error
	result    noise.Result
	remoteID  [32]byte
	datagrams *Datagrams

	// Read side, guarded by rmu.
	rmu       sync.Mutex
	rd        frameReader
	gotHeader bool
	pull      xstream
	plain     []byte // decrypted bytes not yet returned by Read
	rerr      error  // sticky read error
	maxFrame  int

	// Write side, guarded by wmu.
	wmu        sync.Mutex
	push       xstream
	wbuf       []byte // headroom ‖ plaintext ‖ 16 bytes MAC room
	pending    []byte // committed ciphertext a deadline cut short, written first next time
	hdr        []byte // this side's header frame (59 bytes)
	hdrPending bool   // hdr not yet written
	werr       error  // sticky write error
	wclosed    bool
	writeFrame int
}

// New returns a Conn over raw. It does no I/O; the handshake runs on first
// use or with Handshake.
func New(raw RawConn, opts Options) (*Conn, error) {
	if raw == nil {
		return nil, fmt.Errorf("%w: nil raw connection", ErrBadOptions)
	}
	if opts.Handshake != nil && opts.Handshake.IsInitiator != opts.IsInitiator {
		return nil, fmt.Errorf("%w: Handshake.IsInitiator differs from IsInitiator", ErrBadOptions)
	}
	if opts.MaxFrameSize < 0 || opts.WriteFrameSize < 0 || opts.KeepAlive < 0 {
		return nil, fmt.Errorf("%w: negative size or duration", ErrBadOptions)
	}
	c := &Conn{
		raw:    raw,
		opts:   opts,
		rnd:    opts.Random,
		done:   make(chan struct{}),
		kaStop: make(chan struct{}),
		stall:  make(chan struct{}, 1),
		epoch:  time.Now(),
	}
	c.auth, _ = raw.(authNoter)
	if c.rnd == nil {
		c.rnd = rand.Reader
	}
	c.maxFrame = opts.MaxFrameSize
	if c.maxFrame == 0 || c.maxFrame > MaxFrame {
		c.maxFrame = MaxFrame
	}
	c.writeFrame = opts.WriteFrameSize
	if c.writeFrame == 0 {
		c.writeFrame = DefaultWriteFrameSize
	}
	c.writeFrame = min(c.writeFrame, MaxWritePayload) &^ 15
	if c.writeFrame == 0 {
		c.writeFrame = 16
	}
	if opts.Handshake == nil && opts.KeyPair.Private == nil {
		kp, err := key.Generate(c.rnd)
		if err != nil {
			return nil, err
		}
		c.opts.KeyPair = kp
	}
	return c, nil
}

// Client is New with IsInitiator set.
func Client(raw RawConn, opts Options) (*Conn, error) {
	opts.IsInitiator = true
	return New(raw, opts)
}

// Server is New with IsInitiator cleared.
func Server(raw RawConn, opts Options) (*Conn, error) {
	opts.IsInitiator = false
	return New(raw, opts)
}

// Handshake runs the Noise XX handshake (unless Options.Handshake was given)
// and prepares both secretstream states. It returns once the keys exist.
// This side's header goes out in front of its first frame (see
// runHandshake) and the peer's header is checked by the first Read, so data
// can follow the handshake without waiting a round trip.
//
// If ctx ends first the underlying connection is closed and Handshake
// returns ctx's error. A failed handshake is permanent (as in crypto/tls):
// later calls, Reads and Writes return the same error. Calling it again
// after success returns nil.
func (c *Conn) Handshake(ctx context.Context) error {
	if c.hsDone.Load() {
		return c.hsErr
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsDone.Load() {
		return c.hsErr
	}
	err := c.handshakeCtx(ctx)
	c.hsErr = err
	c.hsDone.Store(true)
	return err
}

func (c *Conn) handshakeCtx(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		c.closeRaw()
		return c.hsError(err)
	}
	if c.isClosed() {
		return c.hsError(net.ErrClosed)
	}
	aborted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.closeRaw() // unblocks the raw Read/Write the handshake sits in
		close(aborted)
	})
	err := c.runHandshake()
	if !stop() {
		<-aborted
		return c.hsError(ctx.Err())
	}
	if err != nil {
		if c.isClosed() {
			err = fmt.Errorf("%w (%w)", net.ErrClosed, err)
		}
		return c.hsError(err)
	}
	if c.opts.SendHeader {
		c.wmu.Lock()
		err := c.flushHeader()
		c.wmu.Unlock()
		if err != nil {
			return c.hsError(err)
		}
	}
	if c.opts.KeepAlive > 0 {
		c.mu.Lock()
		if !c.closed {
			c.wg.Add(1)
			go c.keepAlive(c.opts.KeepAlive)
		}
		c.mu.Unlock()
		if sn, ok := c.raw.(stallNotifier); ok {
			sn.OnReceiveStall(c.onStall)
		}
	}
	return nil
}

// onStall is the raw connection's receive-stall hook: it must not block,
// so it only wakes keepAlive.
func (c *Conn) onStall() {
	select {
	case c.stall <- struct{}{}:
	default:
	}
}

// hsError wraps err as a handshake failure unless it is already a protocol
// error (which names its phase).
func (c *Conn) hsError(err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return err
	}
	return &ProtocolError{Phase: PhaseHandshake, Frame: c.rd.frames, Len: -1, Err: fmt.Errorf("%w: %w", ErrHandshake, err)}
}

// runHandshake does the XX exchange when needed, then sets up both
// secretstream states and writes the header frame:
//
//	38 00 00 ‖ streamId(hash, ownRole)[32] ‖ header[24]      (59 bytes)
func (c *Conn) runHandshake() error {
	var out []byte
	res := c.opts.Handshake
	c.hdr = make([]byte, 0, 3+headerBodyLen)
	if res == nil {
		r, o, err := c.runXX()
		if err != nil {
			return err
		}
		res, out = &r, o
	}
	c.result = *res
	var header [HeaderSize]byte
	if _, err := io.ReadFull(c.rnd, header[:]); err != nil {
		return fmt.Errorf("secretstream: reading randomness: %w", err)
	}
	c.push.init(&res.Tx, &header)
	d, err := NewDatagrams(&res.Hash, c.opts.IsInitiator, c.rnd)
	if err != nil {
		return err
	}
	c.datagrams = d
	c.remoteID = StreamID(&res.Hash, !c.opts.IsInitiator)
	id := StreamID(&res.Hash, c.opts.IsInitiator)
	c.wbuf = make([]byte, headroom+c.writeFrame, headroom+c.writeFrame+16)
	// The header is not written here but queued in front of the first
	// frame (data, keepalive) or CloseWrite. Writing it now could deadlock
	// on an unbuffered transport such as net.Pipe, where both sides would
	// write their header while neither reads; the peer needs it only to
	// decrypt data, which always comes after it. The initiator's last XX
	// message is still sent now (the responder is reading then).
	if len(out) > 0 {
		if _, err := c.raw.Write(out); err != nil {
			return err
		}
	}
	c.hdr = appendU24(c.hdr[:0], headerBodyLen)
	c.hdr = append(c.hdr, id[:]...)
	c.hdr = append(c.hdr, header[:]...)
	c.hdrPending = true
	c.touchWrite()
	return nil
}

// runXX is secret-stream's own handshake: Noise XX over Ed25519 with an
// empty prologue and empty payloads, each message one u24 frame. It returns
// the result and the initiator's last message, still unsent, so that it
// goes out with the header in one write.
func (c *Conn) runXX() (noise.Result, []byte, error) {
	h, err := noise.New(noise.Config{
		Pattern:   noise.XX,
		Initiator: c.opts.IsInitiator,
		KeyPair:   c.opts.KeyPair,
		Random:    c.rnd,
	})
	if err != nil {
		return noise.Result{}, nil, err
	}
	var out []byte
	send := func() error {
		msg, err := h.WriteMessage(nil, nil)
		if err != nil {
			return err
		}
		out = append(appendU24(out[:0], len(msg)), msg...)
		if h.Complete() {
			return nil // goes out with the header
		}
		_, err = c.raw.Write(out)
		out = out[:0]
		return err
	}
	if c.opts.IsInitiator {
		if err := send(); err != nil {
			return noise.Result{}, nil, err
		}
	}
	for !h.Complete() {
		s, e, err := c.rd.next(c.raw, maxHandshakeFrame)
		if err != nil {
			return noise.Result{}, nil, c.readError(PhaseHandshake, err)
		}
		if _, err := h.ReadMessage(nil, c.rd.buf[s:e]); err != nil {
			return noise.Result{}, nil, &ProtocolError{Phase: PhaseHandshake, Frame: c.rd.frames - 1, Len: e - s, Err: fmt.Errorf("%w: %w", ErrHandshake, err)}
		}
		if h.Complete() {
			break
		}
		if err := send(); err != nil {
			return noise.Result{}, nil, err
		}
	}
	r, err := h.Result()
	return r, out, err
}

// readError turns a frameReader error into what Read reports.
func (c *Conn) readError(phase Phase, err error) error {
	if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrHeader) {
		return &ProtocolError{Phase: phase, Frame: c.rd.frames, Len: c.rd.pendingLen(), Err: err}
	}
	if c.isClosed() {
		return net.ErrClosed
	}
	return err
}

func (c *Conn) handshake() error {
	if c.hsDone.Load() {
		return c.hsErr
	}
	return c.Handshake(context.Background())
}

// Read reads decrypted data. Empty frames (keepalives) are always dropped:
// an io.Reader cannot deliver an empty message (Node delivers one only when
// its keepalive and filterZeroByteMessages are off). A deadline expiring
// leaves the Conn usable; a protocol violation is permanent and closes the
// underlying connection, as Node destroys the stream.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.plain) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.isClosed() {
			return 0, net.ErrClosed
		}
		if len(p) == 0 {
			return 0, nil
		}
		if err := c.readRecord(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// readRecord reads and processes one frame: the peer's header first, data
// frames after it.
func (c *Conn) readRecord() error {
	limit := c.maxFrame
	phase := PhaseData
	if !c.gotHeader {
		limit, phase = headerBodyLen, PhaseHeader
	}
	s, e, err := c.rd.next(c.raw, limit)
	if err != nil {
		if isTimeout(err) {
			return err // transient: the frame reader keeps its state
		}
		if errors.Is(err, ErrFrameTooLarge) && phase == PhaseHeader {
			err = fmt.Errorf("%w: length %d, want %d", ErrHeader, c.rd.pendingLen(), headerBodyLen)
		}
		return c.fail(c.readError(phase, err))
	}
	frame := c.rd.frames - 1
	if !c.gotHeader {
		body := c.rd.buf[s:e]
		if len(body) != headerBodyLen {
			return c.fail(&ProtocolError{Phase: PhaseHeader, Frame: frame, Len: len(body), Err: ErrHeader})
		}
		if subtle.ConstantTimeCompare(body[:32], c.remoteID[:]) != 1 {
			return c.fail(&ProtocolError{Phase: PhaseHeader, Frame: frame, Len: len(body), Err: ErrStreamID})
		}
		c.pull.init(&c.result.Rx, (*[HeaderSize]byte)(body[32:]))
		c.gotHeader = true
		return nil
	}
	m, _, err := c.pull.openInPlace(c.rd.buf[s-(headroom-1) : e])
	if err != nil {
		return c.fail(&ProtocolError{Phase: PhaseData, Frame: frame, Len: e - s, Err: err})
	}
	c.plain = m
	c.lastRead.Store(int64(time.Since(c.epoch)))
	if c.auth != nil {
		// Everything read up to this message's end is authentic now;
		// what the frame reader holds beyond it is not yet.
		c.auth.Authenticated(c.rd.total - int64(c.rd.w-c.rd.r))
	}
	return nil
}

// fail records a permanent read error. Protocol errors also close the
// underlying connection, which is what Node's destroy() does to the peer.
func (c *Conn) fail(err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		c.closeRaw()
	}
	c.rerr = err
	return err
}

// Write encrypts p into frames of at most WriteFrameSize plaintext bytes.
//
// Frame sizes: Node writes each write() as one frame and refuses writes
// above MaxWritePayload; Go writes are split instead, since io.Writer has
// no atomic-message contract, and every frame is one 'data' chunk on the
// Node side, so both framings are equivalent to the peer. A tail of 1 KiB or
// more whose length is not 0 or 8 mod 16 is sent as an aligned frame plus
// a short one, which keeps most bytes on the fast crypto path (xchacha.go).
//
// When the raw Write fails on a deadline in the middle of a frame, the
// frame counts as written and its unsent bytes go out first on the next
// Write; a deadline before the first byte undoes the encryption. Other
// write errors are permanent.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writable(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		k := c.chunkLen(len(p))
		committed, err := c.writeFrameLocked(p[:k])
		if committed {
			n += k
		}
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

func (c *Conn) chunkLen(n int) int {
	if n > c.writeFrame {
		return c.writeFrame
	}
	if n >= splitThreshold && !aligned(n) {
		return n &^ 15
	}
	return n
}

// writable checks the sticky state and flushes a pending partial frame.
func (c *Conn) writable() error {
	if c.isClosed() {
		return net.ErrClosed
	}
	if c.werr != nil {
		return c.werr
	}
	for len(c.pending) > 0 {
		k, err := c.raw.Write(c.pending)
		c.pending = c.pending[k:]
		if err != nil {
			if !isTimeout(err) {
				c.werr = err
			}
			return err
		}
	}
	return nil
}

// writeFrameLocked encrypts m into wbuf and writes the frame
//
//	len u24 LE ‖ B[0] ‖ C ‖ MAC       (3 + len(m) + 17 bytes)
//
// which sealInPlace lays out as wbuf[headroom-4 : headroom+len(m)+16]. The
// first frame carries the 59-byte header frame in front of it, in the same
// raw write (it fits in the headroom once sealing is done with it).
func (c *Conn) writeFrameLocked(m []byte) (committed bool, err error) {
	buf := c.wbuf[:headroom+len(m)]
	copy(buf[headroom:], m)
	saved := c.push
	ct := c.push.sealInPlace(buf, TagMessage)
	start := headroom - 4
	putU24(c.wbuf[start:], len(ct))
	if c.hdrPending {
		start -= len(c.hdr)
		copy(c.wbuf[start:], c.hdr)
	}
	frame := c.wbuf[start : headroom-1+len(ct)]
	k, err := c.raw.Write(frame)
	if err == nil {
		c.hdrPending = false
		c.touchWrite()
		return true, nil
	}
	switch {
	case k == 0 && isTimeout(err):
		c.push = saved // nothing left the process: undo
		return false, err
	case k < len(frame) && isTimeout(err):
		c.hdrPending = false
		c.pending = frame[k:]
		return true, err
	default:
		if c.isClosed() {
			err = net.ErrClosed
		}
		c.werr = err
		return k == len(frame), err
	}
}

// flushHeader writes a still-pending header on its own (CloseWrite).
func (c *Conn) flushHeader() error {
	if !c.hdrPending {
		return nil
	}
	k, err := c.raw.Write(c.hdr)
	if err != nil {
		if k > 0 || !isTimeout(err) {
			c.hdrPending = false
			c.pending = c.hdr[k:]
		}
		return err
	}
	c.hdrPending = false
	return nil
}

func (c *Conn) touchWrite() { c.lastWrite.Store(int64(time.Since(c.epoch))) }

// keepAlive sends an empty frame (20 bytes on the wire) whenever d has
// passed without a write, like Node's setKeepAlive, and when the raw
// connection's receive stalls (onStall). It skips a beat when a Write is
// in progress, which refreshes the timer anyway and whose data speaks
// for this side as well.
func (c *Conn) keepAlive(d time.Duration) {
	defer c.wg.Done()
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		stalled := false
		select {
		case <-c.done:
			return
		case <-c.kaStop:
			return
		case <-c.stall:
			stalled = true
		case <-t.C:
		}
		if !stalled {
			idle := time.Since(c.epoch) - time.Duration(c.lastWrite.Load())
			if idle < d {
				t.Reset(d - idle)
				continue
			}
		}
		if c.wmu.TryLock() {
			if c.writable() == nil && !c.wclosed {
				c.writeFrameLocked(nil)
			}
			c.wmu.Unlock()
		}
		if !stalled {
			t.Reset(d)
		}
	}
}

// CloseWrite half-closes: it flushes, stops the keepalive and calls the
// raw connection's CloseWrite (TCP FIN, UDX END). The peer reads EOF; no
// secretstream FINAL tag is sent, as in Node. It returns an error wrapping
// errors.ErrUnsupported when the raw connection cannot half-close.
func (c *Conn) CloseWrite() error {
	cw, ok := c.raw.(closeWriter)
	if !ok {
		return fmt.Errorf("secretstream: CloseWrite on %T: %w", c.raw, errors.ErrUnsupported)
	}
	if err := c.handshake(); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return nil
	}
	if err := c.writable(); err != nil {
		return err
	}
	if err := c.flushHeader(); err != nil {
		return err
	}
	c.wclosed = true
	c.werr = ErrWriteClosed
	c.kaOnce.Do(func() { close(c.kaStop) })
	return cw.CloseWrite()
}

// Close closes the underlying connection, which unblocks pending Reads,
// Writes and a running handshake, and waits for the keepalive goroutine.
// It is idempotent: later calls return nil.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	c.mu.Unlock()
	err := c.closeRaw()
	c.wg.Wait()
	return err
}

func (c *Conn) closeRaw() error {
	c.rawOnce.Do(func() { c.rawErr = c.raw.Close() })
	return c.rawErr
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// SetDeadline sets the raw connection's deadlines. A Read or Write that
// times out can be retried; see Write for a frame cut short by a deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if d, ok := c.raw.(deadliner); ok {
		return d.SetDeadline(t)
	}
	return c.noDeadlines()
}

// SetReadDeadline sets the raw connection's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if d, ok := c.raw.(deadliner); ok {
		return d.SetReadDeadline(t)
	}
	return c.noDeadlines()
}

// SetWriteDeadline sets the raw connection's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if d, ok := c.raw.(deadliner); ok {
		return d.SetWriteDeadline(t)
	}
	return c.noDeadlines()
}

func (c *Conn) noDeadlines() error {
	return fmt.Errorf("secretstream: deadlines on %T: %w", c.raw, errors.ErrUnsupported)
}

type rawAddr struct{}

func (rawAddr) Network() string { return "secretstream" }
func (rawAddr) String() string  { return "secretstream" }

// LocalAddr is the raw connection's local address, when it has one.
func (c *Conn) LocalAddr() net.Addr {
	if a, ok := c.raw.(addresser); ok {
		return a.LocalAddr()
	}
	return rawAddr{}
}

// RemoteAddr is the raw connection's remote address, when it has one.
func (c *Conn) RemoteAddr() net.Addr {
	if a, ok := c.raw.(addresser); ok {
		return a.RemoteAddr()
	}
	return rawAddr{}
}

// Raw returns the underlying connection.
func (c *Conn) Raw() RawConn { return c.raw }

// RTT is the raw connection's smoothed round-trip time when it measures
// one (a udx stream does), else 0.
func (c *Conn) RTT() time.Duration {
	if r, ok := c.raw.(interface{ RTT() time.Duration }); ok {
		return r.RTT()
	}
	return 0
}

// LastReceive is when the latest frame from the peer was read, its
// keepalives included (zero before the first). The peer's keepalive
// bounds how old it gets while the peer lives and the path works, so a
// session above can tell a quiet peer from a vanished one long before any
// timeout would; it is read as the frames are, so it says nothing while
// nobody reads.
func (c *Conn) LastReceive() time.Time {
	ns := c.lastRead.Load()
	if ns == 0 {
		return time.Time{}
	}
	return c.epoch.Add(time.Duration(ns))
}

// IsInitiator reports the role given in Options.
func (c *Conn) IsInitiator() bool { return c.opts.IsInitiator }

// PublicKey is this side's static public key (zero before the handshake).
func (c *Conn) PublicKey() key.PublicKey { return c.completed().PublicKey }

// RemotePublicKey is the peer's static public key as the handshake proved
// it (zero before the handshake).
func (c *Conn) RemotePublicKey() key.PublicKey { return c.completed().RemotePublicKey }

// HandshakeHash is the 64-byte Noise handshake hash (zero before the
// handshake); stream ids and datagram keys derive from it.
func (c *Conn) HandshakeHash() [HashSize]byte { return c.completed().Hash }

// Datagrams returns the datagram (send/trySend) state of this connection,
// or nil before the handshake.
func (c *Conn) Datagrams() *Datagrams {
	if !c.hsDone.Load() || c.hsErr != nil {
		return nil
	}
	return c.datagrams
}

func (c *Conn) completed() noise.Result {
	if !c.hsDone.Load() || c.hsErr != nil {
		return noise.Result{}
	}
	return c.result
}
