package protomux

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Framed is a message-framed duplex: every WriteMessage arrives as one
// ReadMessage on the other side, in order. Close must unblock a pending
// ReadMessage and WriteMessage.
type Framed interface {
	ReadMessage() ([]byte, error)
	WriteMessage([]byte) error
	Close() error
}

// Options configure a Mux. The zero value gives the reference's limits.
type Options struct {
	// MaxBuffered bounds the bytes of messages held for channels the peer
	// opened and this side has not accepted yet, each counted as 512 +
	// its length; above it the Mux stops reading until they drain. 0
	// means MaxBuffered (32 KiB).
	MaxBuffered int
	// MaxBacklog bounds the peer's channels waiting for this side to
	// accept or reject them; more is fatal (ErrBacklog). 0 means 1024.
	// (Node has no bound.)
	MaxBacklog int
	// MaxWriteQueue bounds the bytes queued for the transport; a send
	// beyond it fails with ErrWriteQueueFull. 0 means 64 MiB.
	MaxWriteQueue int
}

// Mux multiplexes channels over one Framed transport. It owns three
// goroutines (reader, dispatcher, writer) plus one per running pair
// handler; Close stops and waits for all of them.
//
// Every callback of a Mux (OnOpen, OnClose, message handlers) runs on its
// dispatcher goroutine, one at a time, in wire order. Callbacks may call
// any method except Close (use Destroy, which does not wait).
type Mux struct {
	t    Framed
	opts Options

	ctx    context.Context // cancelled on destroy
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{} // closed when every goroutine has returned

	frames chan []byte // reader → dispatcher

	mu         sync.Mutex
	err        error
	local      []*Channel // localID-1 → channel (nil: free or awaiting ack)
	free       []uint64   // reusable local ids - 1, used LIFO as Node does
	remote     []*remoteSlot
	infos      map[string]*info
	notify     map[string]PairFunc
	backlog    int
	buffered   int
	corked     int
	batch      Batch
	tasks      []func()
	taskSig    chan struct{}
	resumeSig  chan struct{}
	wq         [][]byte
	wqBytes    int
	wqSig      chan struct{}
	flushWait  []chan struct{}
	writing    bool
	destroyErr error
}

// PairFunc is told that the peer opened a channel (protocol, id) that no
// local channel was waiting for. It runs on its own goroutine; to accept,
// open a matching channel before returning. When the last running PairFunc
// for that key returns, unaccepted opens are rejected. ctx ends when the
// Mux is destroyed.
type PairFunc func(ctx context.Context, id []byte)

type remoteSlot struct {
	handshake []byte       // OPEN's handshake bytes until the channel opens
	pending   []pendingMsg // non-nil while the local side has not accepted
	session   *Channel
	info      *info
}

type pendingMsg struct {
	typ  uint64
	body []byte
}

type info struct {
	key      string
	aliases  []string
	pairing  int
	opened   int
	incoming []uint64 // remote ids of peer opens not yet paired
	outgoing []uint64 // local ids of our opens not yet paired
}

func toKey(protocol string, id []byte) string {
	return protocol + "##" + hex.EncodeToString(id)
}

// New starts a Mux over t.
func New(t Framed, opts Options) *Mux {
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = MaxBuffered
	}
	if opts.MaxBacklog <= 0 {
		opts.MaxBacklog = 1024
	}
	if opts.MaxWriteQueue <= 0 {
		opts.MaxWriteQueue = 64 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		t:         t,
		opts:      opts,
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		frames:    make(chan []byte),
		infos:     map[string]*info{},
		notify:    map[string]PairFunc{},
		taskSig:   make(chan struct{}, 1),
		resumeSig: make(chan struct{}, 1),
		wqSig:     make(chan struct{}, 1),
	}
	m.wg.Add(3)
	go m.readLoop()
	go m.dispatchLoop()
	go m.writeLoop()
	go func() { m.wg.Wait(); close(m.done) }()
	return m
}

// Err returns why the Mux was destroyed, or nil while it runs.
func (m *Mux) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Done is closed once the Mux is destroyed and all its goroutines have
// returned.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Destroy tears the Mux down with err (ErrClosed if nil) without waiting:
// the transport is closed, queued writes are dropped and every channel
// closes with isRemote = true. Safe from callbacks; idempotent.
func (m *Mux) Destroy(err error) {
	if err == nil {
		err = ErrClosed
	}
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	m.mu.Unlock()
	m.cancel()
	m.t.Close()
}

// Close destroys the Mux and waits for its goroutines. Idempotent. It
// returns nil after a local close, or the error that destroyed it. Do not
// call it from a callback.
func (m *Mux) Close() error {
	m.Destroy(ErrClosed)
	<-m.done
	if err := m.Err(); !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// Flush waits until every frame queued so far was handed to the transport.
func (m *Mux) Flush(ctx context.Context) error {
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return err
	}
	if len(m.wq) == 0 && !m.writing {
		m.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	m.flushWait = append(m.flushWait, ch)
	m.mu.Unlock()
	select {
	case <-ch:
		return m.Err()
	case <-m.ctx.Done():
		return m.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Pair registers fn for peer opens of (protocol, id); a nil id is the
// fallback for every id of protocol. A nil fn removes the registration.
func (m *Mux) Pair(protocol string, id []byte, fn PairFunc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if fn == nil {
		delete(m.notify, toKey(protocol, id))
		return
	}
	m.notify[toKey(protocol, id)] = fn
}

// Opened reports whether a channel (protocol, id) is open (or opening)
// on this Mux.
func (m *Mux) Opened(protocol string, id []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.infos[toKey(protocol, id)]
	return in != nil && in.opened > 0
}

// Cork starts collecting outgoing frames into one BATCH frame; Uncork
// sends it. Calls nest.
func (m *Mux) Cork() {
	m.mu.Lock()
	m.corked++
	m.mu.Unlock()
}

// Uncork ends a Cork; the outermost one sends the batch.
func (m *Mux) Uncork() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.uncorkLocked()
}

func (m *Mux) uncorkLocked() {
	if m.corked == 0 {
		return
	}
	if m.corked--; m.corked == 0 && m.batch.Entries() > 0 {
		m.enqueueLocked(m.batch.Bytes())
		m.batch.Reset()
	}
}

// --- writing ---

// write0 queues a control frame (00 type ...), batching it when corked.
func (m *Mux) write0Locked(frame []byte) {
	if m.corked > 0 {
		m.pushBatchLocked(0, frame[1:])
		return
	}
	m.enqueueLocked(frame)
}

func (m *Mux) pushBatchLocked(ch uint64, entry []byte) {
	if m.batch.Len() >= MaxBatch {
		m.enqueueLocked(m.batch.Bytes())
		m.batch.Reset()
	}
	m.batch.Add(ch, entry)
}

func (m *Mux) enqueueLocked(frame []byte) {
	m.wq = append(m.wq, frame)
	m.wqBytes += len(frame)
	select {
	case m.wqSig <- struct{}{}:
	default:
	}
}

func (m *Mux) writeLoop() {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		for len(m.wq) > 0 && m.err == nil {
			f := m.wq[0]
			m.wq[0] = nil
			m.wq = m.wq[1:]
			m.writing = true
			m.mu.Unlock()
			err := m.t.WriteMessage(f)
			m.mu.Lock()
			m.writing = false
			m.wqBytes -= len(f)
			if err != nil {
				m.mu.Unlock()
				m.Destroy(fmt.Errorf("%w: write: %w", ErrTransportClosed, err))
				m.mu.Lock()
			}
		}
		if len(m.wq) == 0 {
			m.wq = nil
			for _, c := range m.flushWait {
				close(c)
			}
			m.flushWait = nil
		}
		m.mu.Unlock()
		select {
		case <-m.wqSig:
		case <-m.ctx.Done():
			return
		}
	}
}

// --- reading and dispatch ---

func (m *Mux) readLoop() {
	defer m.wg.Done()
	for {
		f, err := m.t.ReadMessage()
		if err != nil {
			if errors.Is(err, io.EOF) {
				m.Destroy(fmt.Errorf("%w: %w", ErrTransportClosed, io.EOF))
			} else {
				m.Destroy(fmt.Errorf("%w: read: %w", ErrTransportClosed, err))
			}
			return
		}
		select {
		case m.frames <- f:
		case <-m.ctx.Done():
			return
		}
	}
}

// post runs fn on the dispatcher.
func (m *Mux) postLocked(fn func()) {
	m.tasks = append(m.tasks, fn)
	select {
	case m.taskSig <- struct{}{}:
	default:
	}
}

func (m *Mux) dispatchLoop() {
	defer m.wg.Done()
	defer m.shutdown()
	for {
		m.runTasks()
		m.mu.Lock()
		paused := m.buffered > m.opts.MaxBuffered
		m.mu.Unlock()
		frames := m.frames
		if paused {
			frames = nil
		}
		select {
		case f := <-frames:
			if err := m.onFrame(f); err != nil {
				m.Destroy(err)
			}
		case <-m.taskSig:
		case <-m.resumeSig:
		case <-m.ctx.Done():
			return
		}
	}
}

func (m *Mux) runTasks() {
	for {
		m.mu.Lock()
		tasks := m.tasks
		m.tasks = nil
		m.mu.Unlock()
		if len(tasks) == 0 {
			return
		}
		for _, fn := range tasks {
			fn()
		}
	}
}

// shutdown runs on the dispatcher after destroy: queued callbacks run,
// then every channel closes as remote-closed.
func (m *Mux) shutdown() {
	m.runTasks()
	m.mu.Lock()
	var closing []*Channel
	for _, c := range m.local {
		if c != nil {
			closing = append(closing, c)
		}
	}
	for _, c := range closing {
		c.closeLocked(true)
	}
	m.mu.Unlock()
	m.runTasks()
}

func (m *Mux) onFrame(f []byte) error {
	msgs, batched, err := ParseFrame(f)
	if err != nil {
		return err
	}
	if !batched {
		for _, msg := range msgs {
			if err := m.onMsg(msg, nil); err != nil {
				return err
			}
		}
		return nil
	}
	// A batch of several messages: cork replies until the handlers (and
	// the pair functions the batch started) are done, as Node does.
	m.Cork()
	bw := &batchWait{n: 1}
	for _, msg := range msgs {
		if err := m.onMsg(msg, bw); err != nil {
			return err
		}
		if m.ctx.Err() != nil {
			return nil
		}
	}
	m.batchDone(bw)
	return nil
}

type batchWait struct{ n int }

func (m *Mux) batchDone(bw *batchWait) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if bw.n--; bw.n == 0 {
		m.uncorkLocked()
	}
}

func (m *Mux) onMsg(msg Msg, bw *batchWait) error {
	if msg.Channel != 0 {
		m.mu.Lock()
		var r *remoteSlot
		if msg.Channel <= uint64(len(m.remote)) {
			r = m.remote[msg.Channel-1]
		}
		if r == nil { // closed or unknown channel: ignore
			m.mu.Unlock()
			return nil
		}
		if r.pending != nil {
			r.pending = append(r.pending, pendingMsg{msg.Type, msg.Body})
			m.buffered += PendingEntryOverhead + len(msg.Body)
			m.mu.Unlock()
			return nil
		}
		c := r.session
		m.mu.Unlock()
		return c.recv(msg.Type, msg.Body)
	}
	switch msg.Type {
	case TypeOpen:
		o, err := DecodeOpen(msg.Body)
		if err != nil {
			return err
		}
		return m.onOpen(o, bw)
	case TypeReject:
		id, err := DecodeID(msg.Body)
		if err != nil {
			return err
		}
		return m.onReject(id)
	case TypeClose:
		id, err := DecodeID(msg.Body)
		if err != nil {
			return err
		}
		m.onClose(id)
	}
	return nil // unknown control types are ignored
}

func (m *Mux) getInfoLocked(protocol string, id []byte, aliases []string) *info {
	key := toKey(protocol, id)
	if in := m.infos[key]; in != nil {
		return in
	}
	in := &info{key: key}
	m.infos[key] = in
	for _, a := range aliases {
		k := toKey(a, id)
		in.aliases = append(in.aliases, k)
		m.infos[k] = in
	}
	return in
}

func (m *Mux) gcLocked(in *info) {
	if in.opened == 0 && len(in.outgoing) == 0 && len(in.incoming) == 0 && in.pairing == 0 {
		delete(m.infos, in.key)
		for _, a := range in.aliases {
			delete(m.infos, a)
		}
	}
}

func (m *Mux) onOpen(o Open, bw *batchWait) error {
	if o.ID == 0 {
		// The peer tried to open the control channel. Node answers with a
		// malformed REJECT; we ignore it.
		return nil
	}
	m.mu.Lock()
	rid := o.ID - 1
	if rid == uint64(len(m.remote)) {
		m.remote = append(m.remote, nil)
	}
	if rid >= uint64(len(m.remote)) || m.remote[rid] != nil {
		m.mu.Unlock()
		return fmt.Errorf("%w: remote id %d", ErrInvalidOpen, o.ID)
	}
	in := m.getInfoLocked(o.Protocol, o.Key, nil)
	if len(in.outgoing) > 0 {
		lid := in.outgoing[0]
		in.outgoing = in.outgoing[1:]
		c := m.local[lid-1]
		if c == nil { // we closed it before the peer answered
			m.free = append(m.free, lid-1)
			m.gcLocked(in)
			m.mu.Unlock()
			return nil
		}
		m.remote[rid] = &remoteSlot{handshake: o.Handshake, session: c, info: in}
		c.remoteID = o.ID
		m.mu.Unlock()
		return c.fullyOpen()
	}
	m.remote[rid] = &remoteSlot{handshake: o.Handshake, pending: []pendingMsg{}, info: in}
	if m.backlog++; m.backlog > m.opts.MaxBacklog {
		m.mu.Unlock()
		return fmt.Errorf("%w: more than %d channels waiting", ErrBacklog, m.opts.MaxBacklog)
	}
	in.pairing++
	in.incoming = append(in.incoming, o.ID)
	fn := m.notify[toKey(o.Protocol, o.Key)]
	if fn == nil {
		fn = m.notify[toKey(o.Protocol, nil)]
	}
	if fn == nil {
		m.requestDoneLocked(in)
		m.mu.Unlock()
		return nil
	}
	if bw != nil {
		bw.n++
	}
	key := append([]byte(nil), o.Key...)
	if o.Key == nil {
		key = nil
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		fn(m.ctx, key)
		m.mu.Lock()
		m.postLocked(func() {
			m.mu.Lock()
			m.requestDoneLocked(in)
			m.mu.Unlock()
			if bw != nil {
				m.batchDone(bw)
			}
		})
		m.mu.Unlock()
	}()
	return nil
}

// requestDoneLocked ends one pairing request for in: when none is left
// running, the peer's unaccepted opens are rejected.
func (m *Mux) requestDoneLocked(in *info) {
	if in.pairing--; in.pairing > 0 {
		return
	}
	for _, rid := range in.incoming {
		m.rejectLocked(rid)
	}
	in.incoming = nil
	m.gcLocked(in)
}

func (m *Mux) rejectLocked(remoteID uint64) {
	if r := m.remote[remoteID-1]; r != nil {
		m.dropPendingLocked(r)
		m.backlog--
	}
	m.remote[remoteID-1] = nil
	if m.err == nil {
		m.write0Locked(AppendReject(nil, remoteID))
	}
}

func (m *Mux) dropPendingLocked(r *remoteSlot) {
	for _, p := range r.pending {
		m.buffered -= PendingEntryOverhead + len(p.body)
	}
	r.pending = nil
	select {
	case m.resumeSig <- struct{}{}:
	default:
	}
}

func (m *Mux) onReject(localID uint64) error {
	m.mu.Lock()
	for _, in := range m.infos {
		i := indexOf(in.outgoing, localID)
		if i < 0 {
			continue
		}
		in.outgoing = append(in.outgoing[:i:i], in.outgoing[i+1:]...)
		c := m.local[localID-1]
		m.free = append(m.free, localID-1)
		if c != nil {
			c.closeLocked(true)
		}
		m.gcLocked(in)
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	return fmt.Errorf("%w: local id %d", ErrInvalidReject, localID)
}

func (m *Mux) onClose(remoteID uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if remoteID == 0 || remoteID > uint64(len(m.remote)) {
		return
	}
	r := m.remote[remoteID-1]
	if r == nil {
		return
	}
	if r.session != nil {
		r.session.closeLocked(true)
		return
	}
	// The peer closed a channel we have not accepted yet. Node ignores
	// this and keeps it queued; we reject it now, which also lets the
	// peer reuse its id.
	in := r.info
	if i := indexOf(in.incoming, remoteID); i >= 0 {
		in.incoming = append(in.incoming[:i:i], in.incoming[i+1:]...)
		m.rejectLocked(remoteID)
		m.gcLocked(in)
	}
}

func indexOf(s []uint64, v uint64) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
