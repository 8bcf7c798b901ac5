package tunnel

// The gate's credit is for bytes in yamux's send queue. A write that
// yamux holds back for want of window is in no queue, yet it kept the
// credit it was admitted with: two streams whose readers had stopped (a
// paused download) held the whole gateLimit, and every other stream's
// large writes waited with them, for as long as those readers slept.
//
// So the gate also keeps each stream's send window, as yamux does: its
// initial 256 KiB (the yamux spec's), plus the peer's window updates, read
// off the connection, minus the data our writes hand to yamux. A write
// waits for window first, holding no credit, and then asks the gate only
// for what the window lets yamux send at once. A stream's window entry is
// made by its SYN (ours or the peer's), or when the stream is handed
// out, and dropped by a RST either way or FINs both ways, so late frames
// of a finished stream add nothing.
// Data written to a stream past the gate (a mux2 stream header) is not
// subtracted; the few bytes only make a write wait for them inside yamux.

// yamuxInitialWindow is every yamux stream's send window before the
// peer's first window update (go-yamux's initialStreamWindow).
const yamuxInitialWindow = 256 << 10

type sendWindow struct {
	avail         int64
	finOut, finIn bool
	// unread: data the peer sent on the stream that yamux has taken off
	// a laneConn and the stream's reader has not read (see Buffered).
	unread int64
}

// frameWatcher follows the frames yamux reads, across reads that split
// them anywhere. Only yamux's receive loop calls it.
type frameWatcher struct {
	hdr  [muxHeaderSize]byte
	have int
	skip int64  // body bytes of the current data frame still to pass
	id   uint32 // the current data frame's stream
}

// watchIn updates windows from bytes yamux read from the connection.
func (g *sendGate) watchIn(p []byte) {
	w := &g.rx
	for len(p) > 0 {
		if w.skip > 0 {
			k := int64(min(int64(len(p)), w.skip))
			w.skip -= k
			p = p[k:]
			if g.lanes {
				g.received(w.id, k)
			}
			continue
		}
		k := copy(w.hdr[w.have:], p)
		w.have += k
		p = p[k:]
		if w.have < muxHeaderSize {
			return
		}
		w.have = 0
		h := parseLaneHeader(w.hdr[:])
		w.skip, w.id = int64(h.bodyLen()), h.id
		g.noteFrame(h, false)
	}
}

// watchOut notes a frame yamux wrote: a SYN makes the stream's entry, a
// FIN or RST may end it.
func (g *sendGate) watchOut(b []byte) {
	if len(b) >= muxHeaderSize {
		g.noteFrame(parseLaneHeader(b), true)
	}
}

// noteFrame applies frame h, sent (out) or received, to its stream's
// window. Most frames are data without flags, which change nothing here:
// they pass without the lock.
func (g *sendGate) noteFrame(h laneHeader, out bool) {
	if h.version != 0 || h.id == 0 || (h.typ == muxTypeData && h.flags == 0) {
		return
	}
	var grow int64
	if !out && h.typ == muxTypeWindowUpdate {
		grow = int64(h.length)
	}
	g.frame(h.id, h.flags, out, grow)
}

// frame applies one frame's flags, and the window it grants (grow), to
// stream id's window.
func (g *sendGate) frame(id uint32, flags uint16, out bool, grow int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	sw := g.win[id]
	if sw == nil {
		if flags&muxFlagSYN == 0 {
			return // a finished stream's late frame, or one never gated
		}
		sw = g.newWindowLocked(id)
	}
	if grow > 0 {
		if sw.avail <= 0 {
			g.kickWindowsLocked()
		}
		sw.avail += grow
	}
	if out {
		sw.finOut = sw.finOut || flags&muxFlagFIN != 0
	} else {
		sw.finIn = sw.finIn || flags&muxFlagFIN != 0
	}
	if flags&muxFlagRST != 0 || (sw.finOut && sw.finIn) {
		delete(g.win, id)
		g.kickWindowsLocked() // a writer waiting on it gives up
	}
}

func (g *sendGate) kickWindowsLocked() {
	if g.winKick != nil {
		close(g.winKick)
		g.winKick = nil
	}
}

// track makes stream id's window entry if its SYN has not: a stream we
// open is handed out before yamux's send loop writes the SYN, and its
// first writes must already count.
func (g *sendGate) track(id uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.win[id] == nil && !g.closed {
		g.newWindowLocked(id)
	}
}

// newWindowLocked makes stream id's entry, at yamux's initial window.
func (g *sendGate) newWindowLocked(id uint32) *sendWindow {
	if g.win == nil {
		g.win = map[uint32]*sendWindow{}
	}
	sw := &sendWindow{avail: yamuxInitialWindow}
	g.win[id] = sw
	return sw
}

// reserve waits until stream id has window, then takes up to want bytes
// of it and returns how many; the caller gives back what yamux did not
// take (unreserve). A stream the gate has no entry for (not seen to open,
// or already finished) gets want: yamux decides.
func (g *sendGate) reserve(id uint32, want int, st *streamStop) (int, error) {
	for {
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			return want, errGateClosed
		}
		sw := g.win[id]
		if sw == nil {
			g.mu.Unlock()
			return want, nil
		}
		if sw.avail > 0 {
			n := int(min(int64(want), sw.avail))
			sw.avail -= int64(n)
			g.mu.Unlock()
			return n, nil
		}
		if g.winKick == nil {
			g.winKick = make(chan struct{})
		}
		kick := g.winKick
		g.mu.Unlock()
		if err := st.wait(kick); err != nil {
			return 0, err
		}
	}
}

func (g *sendGate) unreserve(id uint32, n int) {
	if n <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if sw := g.win[id]; sw != nil {
		sw.avail += int64(n)
	}
}

// received counts n bytes of stream id's data as yamux reads them.
//
// Only on a laneConn: it hands yamux whole frames, so once a data frame's
// body has passed here, yamux appends it to its stream without waiting for
// the network, and a Read of the stream returns at once. (On another
// connection the rest of a frame could still be on its way.)
func (g *sendGate) received(id uint32, n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if sw := g.win[id]; sw != nil {
		sw.unread += n
	}
}

// consumed counts n bytes of stream id's data read by its reader.
func (g *sendGate) consumed(id uint32, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if sw := g.win[id]; sw != nil {
		sw.unread = max(sw.unread-int64(n), 0)
	}
}

// unread is what received counted of stream id and its reader has not
// read; 0 for a stream the gate no longer follows.
func (g *sendGate) unread(id uint32) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if sw := g.win[id]; sw != nil {
		return int(sw.unread)
	}
	return 0
}
