package dht

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Holder is what a Probe found serving a key.
type Holder int

const (
	// HolderNone: no node holds a record for the key, or the process the
	// record points to did not answer the handshake (a record left behind
	// by a process that crashed: nodes keep it for up to 20 minutes).
	HolderNone Holder = iota
	// HolderOther: a live process other than this node's listener
	// answered the handshake, or refused it (a refusal is an answer too).
	HolderOther
	// HolderSelf: this node's own listener for the key got the probe.
	HolderSelf
)

func (h Holder) String() string {
	switch h {
	case HolderOther:
		return "other"
	case HolderSelf:
		return "self"
	}
	return "none"
}

// ProbeTimeout bounds a Probe, and is what a record left by a crashed
// process costs: nothing answers its handshakes, and the client's
// requests through the nodes holding the record (1 s per attempt, four
// attempts, two nodes at a time) would run past it. A live server answers
// after the lookup and two round trips through a DHT node: 0.04-0.33 s on a
// loopback testnet under -race (TestProbe), a lookup on the public DHT
// takes 1-3 s. 8 s leaves a live server on a slow path that margin
// twice over, and a restart after a crash waits 8 s instead of for the
// record to expire (up to 20 minutes).
const ProbeTimeout = 8 * time.Second

// Probe finds out whether a live process serves kp's public key: it looks
// the key up (or, when via is not empty, asks those nodes, a listener's
// relays, directly) and sends the first Noise message of a handshake, as
// kp, through the nodes holding the key's record. Probe stops at the
// answer: nothing is punched and no connection is made (the server drops
// the handshake slot after 10 s). Only a holder of kp's secret key can
// probe, so a server may treat a handshake from its own key as a sibling
// checking before it announces (ListenOptions.OnReplaced).
func (n *Node) Probe(ctx context.Context, kp key.KeyPair, via []netip.AddrPort) (Holder, error) {
	if n.sock == nil {
		return HolderNone, ErrNoStreams
	}
	if n.ctx.Err() != nil {
		return HolderNone, ErrClosed
	}
	if len(kp.Private) == 0 {
		return HolderNone, errNoSecretKey
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()
	d := &dialer{n: n, kp: kp, remote: kp.Public, target: Hash(kp.Public[:]), done: make(chan struct{})}
	hs, err := newLocalHandshake(kp, &kp.Public)
	if err != nil {
		return HolderNone, err
	}
	defer closeHandshaker(hs)
	d.hs = hs
	// The payload names a udx stream; nothing connects to it.
	st, err := newStream(n.sock.UDX(), nil)
	if err != nil {
		return HolderNone, err
	}
	defer st.Destroy()
	d.stream = st
	p := d.payload()
	if d.msg1, err = hs.WriteMessage(ctx, p.Append(nil)); err != nil {
		return HolderNone, err
	}
	// Our own listener for the key, if any, recognises the probe and
	// says so before it answers.
	self := make(chan struct{})
	if l := n.server(d.target); l != nil {
		defer l.expectProbe(d.msg1, self)()
	}
	go func() {
		select {
		case <-self:
			cancel()
		case <-ctx.Done():
		}
	}()
	if len(via) > 0 {
		err = d.connectVia(ctx, via)
	} else {
		err = d.findAndConnect(ctx)
	}
	select {
	case <-self:
		return HolderSelf, nil
	default:
	}
	d.hsMu.Lock()
	answered := d.connect != nil || d.hsDone
	d.hsMu.Unlock()
	switch {
	case answered:
		return HolderOther, nil
	case parent.Err() != nil:
		return HolderNone, parent.Err()
	case n.ctx.Err() != nil:
		return HolderNone, ErrClosed
	}
	// Not found, or no answer within ProbeTimeout: nobody live holds it.
	n.log.Debug("dht: probe found no live holder", "key", kp.Public, "err", err)
	return HolderNone, nil
}

// connectVia sends the handshake to each of nodes, in parallel, until
// one answers.
func (d *dialer) connectVia(ctx context.Context, nodes []netip.AddrPort) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lastErr error
	for _, to := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.connectThrough(ctx, to); err != nil {
				mu.Lock()
				lastErr = err
				mu.Unlock()
				return
			}
			cancel()
		}()
	}
	wg.Wait()
	return lastErr
}
