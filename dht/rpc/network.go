package rpc

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// request sends an internal-use request with callbacks (DHT._request).
func (d *DHT) request(now time.Time, to netip.AddrPort, force, internal bool, command uint64, target *ID, value []byte,
	onResponse func(time.Time, *Response), onError func(time.Time, error)) *outReq {
	if internal && command == CmdDownHint && d.cfg.NoDownHints {
		return nil
	}
	r := d.newReq(to, nil, internal, command, target, value)
	if r == nil {
		return nil
	}
	r.onResponse, r.onError = onResponse, onError
	d.send(now, r, force)
	return r
}

func (d *DHT) natAdd(addr netip.AddrPort) {
	ph, pp := d.nat.host, d.nat.port
	d.nat.add(addr)
	if ph != d.nat.host || pp != d.nat.port {
		d.log.Debug("dht-rpc nat update", "host", d.nat.host, "port", d.nat.port)
		d.emit(EventNATUpdate, netip.AddrPortFrom(d.nat.host, d.nat.port))
	}
}

// sampleBootstrapMaybe takes NAT samples from id-less nodes, from at most
// max(1, #bootstrap) distinct ones.
func (d *DHT) sampleBootstrapMaybe(from, to netip.AddrPort) {
	if len(d.nonPersSamples) >= max(1, len(d.cfg.Bootstrap)) {
		return
	}
	for _, a := range d.nonPersSamples {
		if a == from {
			return
		}
	}
	d.nonPersSamples = append(d.nonPersSamples, from)
	d.natAdd(to)
}

// addNodeFromNetwork records a node we heard from (DHT._addNodeFromNetwork).
func (d *DHT) addNodeFromNetwork(sample bool, from netip.AddrPort, id *ID, to netip.AddrPort) {
	if d.cfg.FilterNode != nil && !d.cfg.FilterNode(from) {
		return
	}
	if id == nil {
		d.sampleBootstrapMaybe(from, to)
		return
	}
	if old := d.tbl.get(id); old != nil {
		if sample && (old.sampled == 0 || d.tick-old.sampled >= oldNode) {
			old.to = to
			old.sampled = d.tick
			d.natAdd(to)
		}
		old.pinged, old.seen = d.tick, d.tick
		d.nodes.add(old)
		return
	}
	d.addNode(&tableNode{id: *id, addr: from, to: to})
}

func (d *DHT) addNodeAddr(a netip.AddrPort) {
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	if !a.Addr().Is4() {
		return
	}
	d.addNode(&tableNode{id: NodeID(a), addr: a})
}

func (d *DHT) addNode(n *tableNode) {
	if n.inSet || n.id == d.tbl.id {
		return
	}
	if old := d.tbl.get(&n.id); old != nil && old.inSet {
		// Same id already present: the reference's TOS check is by object,
		// so it replaces the table entry; keep the set consistent.
		d.nodes.remove(old)
	}
	n.added, n.pinged, n.seen = d.tick, d.tick, d.tick
	if !d.tbl.add(n) {
		return
	}
	d.nodes.add(n)
	if n.to.IsValid() && n.sampled == 0 {
		n.sampled = d.tick
		d.natAdd(n.to)
	}
	d.emit(EventAddNode, n.addr)
}

func (d *DHT) removeNode(n *tableNode) {
	if !n.inSet {
		return
	}
	d.tbl.remove(&n.id)
	d.nodes.remove(n)
	d.emit(EventRemoveNode, n.addr)
}

// onFullRow pings the least recently pinged node of a full row and
// replaces it with the newcomer if it does not answer.
func (d *DHT) onFullRow(newNode *tableNode, row int) {
	if !d.bootstrapped || d.repinging >= 3 {
		return
	}
	var oldest *tableNode
	for _, n := range d.tbl.rows[row] {
		if n.pinged == d.tick {
			continue
		}
		if oldest == nil || oldest.pinged > n.pinged || (oldest.pinged == n.pinged && oldest.added > n.added) {
			oldest = n
		}
	}
	if oldest == nil {
		return
	}
	if d.tick-oldest.pinged < recentNode && d.tick-oldest.added > oldNode {
		return
	}
	lastSeen := oldest.seen
	oldest.pinged = d.tick
	d.repinging++
	swap := func(time.Time) {
		d.repinging--
		d.removeNode(oldest)
		d.addNode(newNode)
	}
	d.request(d.now, oldest.addr, false, true, CmdPing, nil, nil,
		func(now time.Time, _ *Response) {
			if oldest.seen <= lastSeen {
				swap(now)
				return
			}
			d.repinging--
		},
		func(now time.Time, _ error) { swap(now) })
}

// check pings a table node and drops it unless it answers with its id.
func (d *DHT) check(now time.Time, n *tableNode) {
	n.pinged = d.tick
	lastSeen := n.seen
	d.checks++
	d.request(now, n.addr, false, true, CmdPing, nil, nil,
		func(time.Time, *Response) {
			d.checks--
			if n.seen <= lastSeen {
				d.removeNode(n)
			}
		},
		func(time.Time, error) {
			d.checks--
			d.removeNode(n)
		})
}

func (d *DHT) pingSome(now time.Time) {
	cnt := 5
	if len(d.inflight) > 2 {
		cnt = 3
	}
	oldest := d.nodes.oldest
	if oldest == nil {
		d.refresh(now)
		return
	}
	if d.tick-oldest.pinged < recentNode {
		cnt = 2
	}
	for ; cnt > 0; cnt-- {
		if oldest == nil || d.tick == oldest.pinged {
			continue
		}
		next := oldest.next
		d.check(now, oldest)
		oldest = next
	}
}

func (d *DHT) scheduleTick(now time.Time) {
	d.tm.after(now, d.cfg.tickInterval, func(now time.Time) {
		d.onTick(now)
		d.scheduleTick(now)
	})
}

// onTick is the 5 s maintenance tick (DHT._ontick).
func (d *DHT) onTick(now time.Time) {
	if now.Sub(d.lastTick) > 3*d.cfg.tickInterval {
		d.onWakeup(now)
	} else {
		d.tick++
	}
	d.lastTick = now
	if !d.bootstrapped {
		return
	}
	if d.adaptive && d.ephemeral {
		if d.stableTicksLeft--; d.stableTicksLeft <= 0 {
			if d.lastHost == d.nat.host {
				d.stableTicksLeft = moreStableTicks
			} else {
				d.updateNetworkState(now, false, nil)
			}
		}
	}
	if d.tick&7 == 0 {
		d.pingSome(now)
	}
	if d.tick&63 == 0 && d.nodes.n < d.tbl.k {
		d.refresh(now)
	} else if d.refreshTicks--; d.refreshTicks <= 0 {
		d.refresh(now)
	}
	d.downHintsThisTick = 0
}

func (d *DHT) onWakeup(now time.Time) {
	d.tick += 2 * oldNode
	d.tick += 8 - (d.tick & 7) - 2
	d.stableTicksLeft = moreStableTicks
	d.refreshTicks = 1
	d.lastHost = netip.Addr{}
	if d.adaptive && !d.ephemeral {
		d.ephemeral = true
		d.emit(EventEphemeral, netip.AddrPort{})
	}
}

// refresh runs a background FIND_NODE for a random table node's id.
func (d *DHT) refresh(now time.Time) {
	var b [4]byte
	d.random(b[:])
	target := d.tbl.id
	if n := d.tbl.random(int(binary.LittleEndian.Uint32(b[:]) >> 1)); n != nil {
		target = n.id
	}
	d.backgroundQuery(now, target, nil, nil)
}

// backgroundQuery is a FIND_NODE with concurrency 2 that goes back to
// full concurrency whenever fewer than 3 requests are in flight.
func (d *DHT) backgroundQuery(now time.Time, target ID, onData func(time.Time, *Response), onEnd func(time.Time, error)) *Query {
	d.refreshTicks = refreshTicks
	bg := min(d.cfg.Concurrency, max(2, d.cfg.Concurrency/8))
	q := d.newQuery(target, true, CmdFindNode, nil, &QueryOptions{Concurrency: bg})
	q.background = true
	q.onData = func(now time.Time, r *Response) {
		if len(d.inflight) < 3 {
			q.concurrency = d.cfg.Concurrency
		} else {
			q.concurrency = bg
		}
		if onData != nil {
			onData(now, r)
		}
	}
	q.onEnd = onEnd
	q.start(now)
	return q
}

// startBootstrap runs DHT._bootstrap as a chain of callbacks.
func (d *DHT) startBootstrap(now time.Time) {
	first := d.firewalled && !d.cfg.NoQuickFirewall && !d.forcePers
	testNAT := false
	onlyFirewall := !d.forcePers
	var round func(now time.Time, i int)
	finish := func() {
		if d.bootstrapped {
			return
		}
		d.bootstrapped = true
		d.publish()
		close(d.ready)
		d.log.Debug("dht-rpc bootstrapped", "nodes", d.tbl.size, "ephemeral", d.ephemeral, "firewalled", d.firewalled)
		d.emit(EventReady, netip.AddrPort{})
	}
	onData := func(now time.Time, r *Response) {
		if !first {
			return
		}
		first = false
		v := binary.LittleEndian.AppendUint16(nil, d.serverPort())
		d.request(now, r.From, false, true, CmdPingNAT, nil, v,
			func(time.Time, *Response) { testNAT = true }, nil)
	}
	round = func(now time.Time, i int) {
		var q *Query
		q = d.backgroundQuery(now, d.tbl.id, onData, func(now time.Time, _ error) {
			if d.closedLoop {
				return
			}
			d.markQuietBootstrap(q)
			if i == 1 || d.bootstrapped || (!testNAT && !d.forcePers) {
				finish()
				return
			}
			d.updateNetworkState(now, onlyFirewall, func(now time.Time, ok bool) {
				if !ok {
					finish()
					return
				}
				round(now, i+1)
			})
		})
		q.bootstrap = true
	}
	round(now, 0)
}

// markQuietBootstrap notes the bootstrap nodes that did not answer the
// join's query q, so that later queries do not wait for them (see
// Query.start); a node that answers any query is taken back.
func (d *DHT) markQuietBootstrap(q *Query) {
	for _, b := range d.bootstrapNodes {
		if e := q.seen[b]; e == nil || e.state != seenDone {
			if d.quietBoot == nil {
				d.quietBoot = map[netip.AddrPort]bool{}
			}
			d.quietBoot[b] = true
		} else {
			delete(d.quietBoot, b)
		}
	}
}

// liveBootstrap is the bootstrap nodes without those quiet at the join,
// unless none answered.
func (d *DHT) liveBootstrap() []netip.AddrPort {
	if len(d.quietBoot) == 0 || len(d.quietBoot) >= len(d.bootstrapNodes) {
		return d.bootstrapNodes
	}
	var out []netip.AddrPort
	for _, b := range d.bootstrapNodes {
		if !d.quietBoot[b] {
			out = append(out, b)
		}
	}
	return out
}

// updateNetworkState checks whether the node can leave firewalled and
// ephemeral state (DHT._updateNetworkState). done may be nil.
func (d *DHT) updateNetworkState(now time.Time, onlyFirewall bool, done func(time.Time, bool)) {
	fail := func(now time.Time) {
		if done != nil {
			done(now, false)
		}
	}
	if !d.ephemeral || (onlyFirewall && !d.firewalled) {
		fail(now)
		return
	}
	host, port := d.nat.host, d.nat.port
	if !onlyFirewall {
		d.stableTicksLeft = moreStableTicks
		d.lastHost = host
	}
	if !host.IsValid() || port == 0 {
		fail(now)
		return
	}
	sampler := d.nat
	if d.firewalled {
		sampler = &natSampler{}
	}
	cont := func(now time.Time) {
		d.firewalled = false
		if !d.ephemeral || host != d.nat.host || port != d.nat.port {
			fail(now)
			return
		}
		if sampler.host != host || sampler.port == 0 {
			fail(now)
			return
		}
		id := NodeID(netip.AddrPortFrom(sampler.host, sampler.port))
		if !onlyFirewall {
			d.ephemeral = false
		}
		if sampler != d.nat {
			ph, pp := d.nat.host, d.nat.port
			d.nonPersSamples = nil
			d.nat = sampler
			if ph != d.nat.host || pp != d.nat.port {
				d.emit(EventNATUpdate, netip.AddrPortFrom(d.nat.host, d.nat.port))
			}
		}
		if d.tbl.id != id {
			nodes := d.tbl.all()
			nt := newTable(id, d.tbl.k)
			nt.onFull = d.onFullRow
			d.tbl = nt
			for _, n := range nodes {
				if n.id == id {
					continue
				}
				if !nt.add(n) {
					d.nodes.remove(n)
				}
			}
			if d.bootstrapped {
				d.refresh(now)
			}
		}
		if !d.ephemeral {
			d.log.Debug("dht-rpc persistent", "id", id)
			// Publish first: whoever the event wakes reads the new state.
			d.publish()
			d.emit(EventPersistent, netip.AddrPortFrom(host, port))
		}
		if done != nil {
			done(now, true)
		}
	}
	if !d.firewalled {
		cont(now)
		return
	}
	d.checkIfFirewalled(now, sampler, func(now time.Time, firewalled bool) {
		if firewalled {
			fail(now)
			return
		}
		cont(now)
	})
}

// checkIfFirewalled asks up to 5 nodes (latest table nodes, topped up
// with bootstrap nodes) to PING_NAT our server socket.
func (d *DHT) checkIfFirewalled(now time.Time, sampler *natSampler, done func(time.Time, bool)) {
	var nodes []netip.AddrPort
	for n := d.nodes.latest; n != nil && len(nodes) < 5; n = n.prev {
		nodes = append(nodes, n.addr)
	}
	if len(nodes) < 5 {
		nodes = append(nodes, d.liveBootstrap()...)
	}
	if len(nodes) == 0 {
		done(now, true)
		return
	}
	if d.fwWatch == nil {
		d.fwWatch = make(map[netip.Addr]struct{})
	}
	d.fwChecks++
	serverPort := d.serverPort()
	v := binary.LittleEndian.AppendUint16(nil, serverPort)
	missing := len(nodes)
	var pongs []*Response
	finish := func(now time.Time) {
		count := 0
		for _, r := range pongs {
			if _, ok := d.fwWatch[r.From.Addr()]; ok {
				count++
				sampler.add(r.To)
			}
		}
		if d.fwChecks--; d.fwChecks == 0 {
			d.fwWatch = nil
		}
		need := 1
		if len(nodes) >= 5 {
			need = 3
		}
		switch {
		case count < need,
			!sampler.host.IsValid() || d.nat.host != sampler.host,
			sampler.port == 0 || sampler.port != serverPort:
			done(now, true)
		default:
			done(now, false)
		}
	}
	for _, n := range nodes {
		r := d.request(now, n, false, true, CmdPingNAT, nil, v,
			func(now time.Time, res *Response) {
				pongs = append(pongs, res)
				if missing--; missing == 0 {
					finish(now)
				}
			},
			func(now time.Time, _ error) {
				if missing--; missing == 0 {
					finish(now)
				}
			})
		if r == nil {
			finish(now)
			return
		}
	}
}

// resolveBootstrap turns bootstrap entries into IPv4 addresses, off the
// loop. "suggestedIP@hostname:port" uses the suggested IP if it answers a
// PING, else resolves the hostname.
func (d *DHT) resolveBootstrap(entries []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, e := range entries {
		hostPart, portStr, ok := strings.Cut(e, ":")
		if i := strings.LastIndexByte(e, ':'); i >= 0 {
			hostPart, portStr, ok = e[:i], e[i+1:], true
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if !ok || err != nil || port == 0 {
			d.log.Warn("dht-rpc: bad bootstrap entry", "entry", e)
			continue
		}
		host := hostPart
		if sugg, fallback, ok := strings.Cut(hostPart, "@"); ok {
			host = fallback
			if ip, err := netip.ParseAddr(sugg); err == nil && ip.Is4() {
				ap := netip.AddrPortFrom(ip, uint16(port))
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				go func() {
					select {
					case <-d.closing:
						cancel()
					case <-ctx.Done():
					}
				}()
				_, err := d.Ping(ctx, ap)
				cancel()
				if err == nil {
					out = append(out, ap)
					continue
				}
			}
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			if ip.Is4() {
				out = append(out, netip.AddrPortFrom(ip, uint16(port)))
			}
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		cancel()
		if err != nil || len(ips) == 0 {
			d.log.Debug("dht-rpc: bootstrap lookup failed", "host", host, "err", err)
			continue
		}
		out = append(out, netip.AddrPortFrom(ips[0].Unmap(), uint16(port)))
	}
	return out
}
