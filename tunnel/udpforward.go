package tunnel

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"

	"github.com/keytunnel/keytunnel/internal/key"
)

// UDPForwarder makes a remote peer's UDP service reachable on a local UDP
// socket: each client address and port that sends to the socket is a
// flow, which carries its datagrams to the service and the service's
// replies back to that address.
type UDPForwarder struct {
	pc net.PacketConn
	// sender writes the datagram channel's bursts to clients (nil:
	// pc is not a *net.UDPConn).
	sender *batchSender
	flows  *flowTable[netip.AddrPort]
	drops  lockedRefusalLog
	serving
	keeper
}

// NewUDPForwarder starts reading pc and tunnelling each client's datagrams
// to remote as a UDP flow. It owns pc and closes it on Close. Of opts,
// Raw speaks holesail's UDP framing to a holesail (or any raw) server,
// one peer connection per flow; Flows caps and expires flows. Like a
// Forwarder it dials lazily and redials a lost session on demand.
func NewUDPForwarder(d Dialer, remote key.PublicKey, pc net.PacketConn, opts ForwardOptions) *UDPForwarder {
	opts.defaults()
	u := &UDPForwarder{pc: pc, flows: newFlowTable[netip.AddrPort](opts.Flows)}
	if uc, ok := pc.(*net.UDPConn); ok {
		u.sender = &batchSender{uc: uc}
	}
	log := loggerOr(opts.Logger).With("remote", remote.String(), "local", pc.LocalAddr().String(), "proto", "udp")
	if opts.Service != "" {
		log = log.With("service", opts.Service)
	}
	u.keeper.init(&u.serving, d, remote, opts, log, preamble2)
	u.onUp = u.sessionUp
	u.serving.init(pc)
	u.wg.Add(2)
	go func() {
		defer u.wg.Done()
		u.flows.expireLoop(u.ctx)
	}()
	go u.readLoop()
	if !opts.Raw {
		u.wg.Add(1)
		go u.sessionLoop()
	}
	return u
}

// ForwardUDP tunnels pc's datagrams to remote until ctx ends or pc fails,
// and returns after every flow it started is closed.
func ForwardUDP(ctx context.Context, d Dialer, remote key.PublicKey, pc net.PacketConn, opts ForwardOptions) error {
	return runUntil(ctx, &NewUDPForwarder(d, remote, pc, opts).serving)
}

// Flows is the number of open flows.
func (u *UDPForwarder) Flows() int { return u.flows.len() }

func (u *UDPForwarder) readLoop() {
	defer u.wg.Done()
	defer close(u.done)
	r := newDatagramReader(u.pc)
	for {
		err := r.read(func(p []byte, addr netip.AddrPort) {
			f := u.flows.get(addr)
			if f == nil {
				if f = u.startFlow(addr); f == nil {
					u.drops.log(u.log, "dropping datagrams of a new client: UDP flows at their cap (--max-flows)")
					return
				}
			}
			f.toPeer(p)
		})
		// Let the udx loop put this batch on the wire before reading
		// the next: on one P (as the binary runs) this goroutine would
		// otherwise keep the P while its socket has datagrams, sealing
		// datagrams that then find udx's queue full and are dropped,
		// the encryption wasted; now an overloaded forward drops them
		// in the socket instead, before spending anything on them.
		runtime.Gosched()
		if err != nil {
			if u.ctx.Err() == nil {
				u.err = err
				u.log.Error("local UDP socket failed", "err", err)
			}
			return
		}
	}
}

// startFlow registers a flow for addr and opens it in the background;
// datagrams queue in the flow meanwhile. nil if the table is full.
func (u *UDPForwarder) startFlow(addr netip.AddrPort) *flow {
	f := newFlow(ktFraming, u.writerTo(addr))
	f.deliverBatch = u.batchWriterTo(addr)
	if u.opts.Raw {
		f.framing = holesailFraming
	}
	f.countIn(u.stats)
	if !u.flows.add(addr, f) {
		f.close()
		return nil
	}
	f.onClose = func() {
		u.flows.remove(addr, f)
		u.log.Debug("UDP flow closed", "client", addr.String())
	}
	u.log.Debug("UDP flow open", "client", addr.String())
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		if u.opts.Raw {
			u.runRaw(f, addr)
		} else {
			u.runMux(f, addr)
		}
	}()
	return f
}

func (u *UDPForwarder) runRaw(f *flow, addr netip.AddrPort) {
	pc, err := u.dialRaw()
	if err != nil {
		if u.ctx.Err() == nil {
			u.log.Warn("dropping a UDP flow: dial failed", "client", addr.String(), "err", err)
		}
		f.close()
		return
	}
	if !f.setConn(pc) {
		return
	}
	defer u.stats.addPeer(pc, "raw")()
	runClientFlow(f, bufio.NewReader(pc))
}

func (u *UDPForwarder) runMux(f *flow, addr netip.AddrPort) {
	// Two tries: the session we get may die between the check and
	// OpenStream; the second try waits for its replacement.
	for range 2 {
		sess, err := u.session()
		if err != nil {
			switch {
			case u.ctx.Err() != nil:
			case errors.Is(err, ErrUnreachable):
				// Each datagram of a client whose flow failed starts a
				// new flow, which fails at once during the backoff: one
				// line a second, not one per datagram.
				u.drops.log(u.log, "dropping UDP flows: "+unreachableAdvice+": "+err.Error())
			default:
				u.log.Warn("dropping a UDP flow", "client", addr.String(), "err", err)
			}
			f.close()
			return
		}
		st, err := sess.OpenStream(u.ctx)
		if err != nil {
			sess.Close() // make sure sessionLoop notices
			continue
		}
		sess.flows.add(f)
		f.dg = datagramsOf(sess.pc)
		ms := sess.gate.stream(st)
		if !f.attach(ms, sess.flows) {
			return
		}
		if _, err := st.Write(appendStreamHeader(nil, streamHeader{kind: kindUDP, service: u.opts.Service, flow: f.id})); err != nil {
			f.close()
			return
		}
		u.runFlowStream(f, sess, bufio.NewReader(ms), addr)
		return
	}
	f.close()
}

// runFlowStream runs a client flow on its stream: datagrams go framed
// until the server's reply accepts the flow, then on the datagram channel
// where they fit.
func (u *UDPForwarder) runFlowStream(f *flow, sess *session, r *bufio.Reader, addr netip.AddrPort) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.writeLoop()
	}()
	defer wg.Wait()
	if err := readStreamReply(r); err != nil {
		if rerr := sess.replyErr(); rerr != nil {
			// The server refused the session, not the flow (keeper's
			// sessionLoop says so).
			if !f.isClosed() && u.ctx.Err() == nil {
				u.log.Warn("dropping a UDP flow", "client", addr.String(), "err", rerr)
			}
			f.close()
			return
		}
		if !f.isClosed() && u.ctx.Err() == nil {
			u.drops.log(u.log, "UDP flow refused: "+err.Error())
			u.emit.emit(Event{Kind: EventRefused, Remote: u.remote, Mode: "mux", Service: u.opts.Service, Err: err})
		}
		f.close()
		return
	}
	f.ready.Store(true)
	f.readLoop(r)
}

// runClientFlow runs a raw flow: framed both ways on its own connection.
func runClientFlow(f *flow, r *bufio.Reader) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.writeLoop()
	}()
	f.readLoop(r)
	wg.Wait()
}

// sessionUp gives a new session its flow ids and, when its connection
// carries datagrams, the dispatcher that hands them to flows.
func (u *UDPForwarder) sessionUp(s *session) {
	s.flows = newFlowSet()
	if dg := datagramsOf(s.pc); dg != nil {
		dispatchUntilClosed(u.ctx, &u.wg, s.CloseChan(), s.flows, dg)
	}
}

// dispatchUntilClosed runs flows.dispatch on dg, owned by wg, until ctx
// ends or closed is closed.
func dispatchUntilClosed(ctx context.Context, wg *sync.WaitGroup, closed <-chan struct{}, flows *flowSet, dg dgConn) {
	ctx, cancel := context.WithCancel(ctx)
	wg.Add(2)
	go func() {
		defer wg.Done()
		select {
		case <-closed:
		case <-ctx.Done():
		}
		cancel()
	}()
	go func() {
		defer wg.Done()
		flows.dispatch(ctx, dg)
	}()
}

// writerTo returns what sends a datagram to a client, without allocating
// per datagram when pc is a *net.UDPConn.
func (u *UDPForwarder) writerTo(addr netip.AddrPort) func([]byte) {
	if uc, ok := u.pc.(*net.UDPConn); ok {
		return func(p []byte) { uc.WriteToUDPAddrPort(p, addr) }
	}
	to := net.UDPAddrFromAddrPort(addr)
	return func(p []byte) { u.pc.WriteTo(p, to) }
}

// readFromAddrPort reads a datagram and its sender as a netip.AddrPort
// from a PacketConn that is not a *net.UDPConn (those datagramReader
// reads in batches).
func readFromAddrPort(pc net.PacketConn, buf []byte) (int, netip.AddrPort, error) {
	n, a, err := pc.ReadFrom(buf)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	ap, perr := netip.ParseAddrPort(a.String())
	if perr != nil {
		return n, netip.AddrPort{}, perr
	}
	return n, ap, nil
}
