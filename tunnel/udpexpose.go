package tunnel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/libp2p/go-yamux/v5"
)

// headerTimeout bounds the wait for a stream header: a client writes it
// with the stream's first frame.
const headerTimeout = 10 * time.Second

var (
	errWrongKind    = errors.New("tunnel: a stream of the other kind (TCP vs UDP) than the exposed service")
	errNoService    = errors.New("tunnel: a stream for a service this key does not serve")
	errTooManyFlows = fmt.Errorf("%w: UDP flows at their cap", ErrOverBudget)
)

// muxServer serves the streams of one mux2 session: each starts with a
// stream header, and UDP flows share the session's datagram channel.
type muxServer struct {
	e      *Exposer
	remote key.PublicKey
	log    *slog.Logger
	dg     dgConn // nil: the connection carries no datagrams
	flows  *flowSet
}

func (e *Exposer) newMuxServer(pc PeerConn, sess *yamux.Session, wg *sync.WaitGroup, log *slog.Logger) *muxServer {
	ms := &muxServer{e: e, remote: pc.RemotePublicKey(), log: log, dg: datagramsOf(pc), flows: newFlowSet()}
	if ms.dg != nil {
		dispatchUntilClosed(e.ctx, wg, sess.CloseChan(), ms.flows, ms.dg)
	}
	return ms
}

func (ms *muxServer) serveStream(st muxStream) {
	st.SetReadDeadline(time.Now().Add(headerTimeout))
	h, err := readStreamHeader(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		ms.log.Debug("stream without a valid header; resetting it", "err", err)
		st.Reset()
		return
	}
	e := ms.e
	svc := e.lookup(h.service)
	switch {
	case h.flags != 0:
		ms.refuse(st, h.service, fmt.Sprintf("stream flags %#x not understood by this keytunnel; update it", h.flags), nil)
		return
	case h.kind != kindTCP && h.kind != kindUDP:
		ms.refuse(st, h.service, fmt.Sprintf("stream kind %d not understood by this keytunnel; update it", h.kind), nil)
		return
	case svc == nil:
		reason := e.unknownService(h.service)
		ms.refuse(st, h.service, reason, fmt.Errorf("%w: %s", errNoService, reason))
		return
	case !svc.Allow.Allows(ms.remote):
		reason := fmt.Sprintf("key %s is not in the allow list of %s", ms.remote, e.label(svc))
		ms.refuse(st, h.service, reason, fmt.Errorf("%w: %s", ErrRefused, reason))
		return
	case h.kind == kindUDP && !svc.UDP, h.kind == kindTCP && svc.UDP:
		ms.refuse(st, h.service, e.label(svc)+" behind this key is "+svc.kindAdvice(), errWrongKind)
		return
	}
	if h.kind == kindUDP {
		ms.serveFlow(st, svc, h.flow)
		return
	}
	if e.deliver != nil {
		if _, err := st.Write(appendStreamReply(nil, replyOK, "")); err != nil || !e.deliver(e.ctx, streamConn{st, ms.remote}) {
			st.Close()
		}
		return
	}
	tc, err := e.dialTarget(svc)
	if err != nil {
		ms.log.Warn("cannot reach target", "service", svc.Name, "target", svc.Target, "err", err)
		ms.refuse(st, svc.Name, e.label(svc)+" behind this key is down", nil)
		return
	}
	if _, err := st.Write(appendStreamReply(nil, replyOK, "")); err != nil {
		tc.Close()
		st.Reset()
		return
	}
	defer e.stats.connOpened()()
	_ = join(e.ctx, st, asConn(tc), &e.stats.received, &e.stats.sent)
}

// refuse answers a stream header for service with a refusal and closes
// the stream; the reason reaches the client, which logs it. err, when
// set, is what a refused event carries.
func (ms *muxServer) refuse(st muxStream, service, reason string, err error) {
	ms.e.refusals.log(ms.log, "refused stream: "+reason)
	if err != nil {
		ms.e.emit.emit(Event{Kind: EventRefused, Remote: ms.remote, Mode: "mux", Service: service, Err: err})
	}
	st.SetWriteDeadline(time.Now().Add(2 * time.Second))
	st.Write(appendStreamReply(nil, replyRefused, reason))
	st.Close()
}

// serveFlow runs one UDP flow of a mux2 session: a UDP socket of its own
// towards the target (so that the target's replies come back to this flow
// alone), framed datagrams on the stream both ways, and datagrams on the
// session's channel where they fit.
func (ms *muxServer) serveFlow(st muxStream, svc *service, id uint32) {
	e := ms.e
	tc, err := e.dialTarget(svc)
	if err != nil {
		ms.log.Warn("cannot reach target", "service", svc.Name, "target", svc.Target, "err", err)
		ms.refuse(st, svc.Name, e.label(svc)+" behind this key is unreachable", nil)
		return
	}
	f := newFlow(ktFraming, func(p []byte) { tc.Write(p) })
	f.deliverBatch = connBatchWriter(tc)
	f.countIn(e.stats)
	f.id, f.dg = id, ms.dg
	f.ready.Store(true)
	f.onClose = func() {
		e.flows.remove(f, f)
		tc.Close()
	}
	if !ms.flows.put(f) {
		tc.Close()
		ms.refuse(st, svc.Name, fmt.Sprintf("flow id %d is already open on this session", id), nil)
		return
	}
	f.attach(st, ms.flows)
	if !e.flows.add(f, f) {
		ms.refuse(st, svc.Name, "too many UDP flows on this service; try again later", errTooManyFlows)
		f.close()
		return
	}
	if _, err := st.Write(appendStreamReply(nil, replyOK, "")); err != nil {
		f.close()
		return
	}
	ms.log.Debug("UDP flow open", "flow", id)
	runFlow(f, bufio.NewReader(st), tc)
	ms.log.Debug("UDP flow closed", "flow", id)
}

// runFlow moves an exposed flow's datagrams until the flow closes: from
// r (its stream) and the datagram channel to the target tc, from tc to
// the peer.
func runFlow(f *flow, r *bufio.Reader, tc net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		f.writeLoop()
	}()
	go func() {
		defer wg.Done()
		readTarget(f, tc)
	}()
	f.readLoop(r)
	wg.Wait()
}

// readTarget sends the target's datagrams to the peer until tc is closed.
// A refused send (ECONNREFUSED, the ICMP of a target not listening yet) is
// a lost datagram, as for any UDP client, not the end of the flow.
func readTarget(f *flow, tc net.Conn) {
	defer f.close()
	buf := make([]byte, maxDatagram)
	for {
		n, err := tc.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || f.isClosed() {
				return
			}
			if isConnRefused(err) {
				continue
			}
			return
		}
		f.toPeer(buf[:n])
	}
}

// serveRawUDP serves a raw peer of a UDP service: a holesail client (or a
// keytunnel forward --udp --raw), whose connection carries one flow in
// holesail's framing. got holds the bytes detect read.
func (e *Exposer) serveRawUDP(pc PeerConn, got []byte, eof bool, log *slog.Logger) error {
	tc, err := e.dialTarget(e.def)
	if err != nil {
		log.Warn("cannot reach target", "err", err)
		return err
	}
	f := newFlow(holesailFraming, func(p []byte) { tc.Write(p) })
	f.countIn(e.stats)
	f.onClose = func() {
		e.flows.remove(f, f)
		tc.Close()
	}
	f.setConn(pc)
	if !e.flows.add(f, f) {
		f.close()
		log.Warn("refused raw UDP peer: too many UDP flows on this service")
		e.emit.emit(Event{Kind: EventRefused, Remote: pc.RemotePublicKey(), Mode: "raw", Err: errTooManyFlows})
		return errTooManyFlows
	}
	var r io.Reader = bytes.NewReader(got)
	if !eof {
		r = io.MultiReader(r, pc)
	}
	runFlow(f, bufio.NewReader(r), tc)
	return nil
}
