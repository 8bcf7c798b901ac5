package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/libp2p/go-yamux/v5"
)

// A probe connection measures the path to an Exposer without touching its
// target (keytunnel doctor). The client opens it with probePreamble and,
// after the OK reply, sends commands, one byte each:
//
//	'u' n:u64be  then n bytes: the server reads them all, then answers 'u'
//	'd' n:u64be  the server sends n zero bytes
//
// n is at most maxProbeBytes; anything else ends the connection. A probe
// counts as a peer session against the Budget, passes the allow list as a
// mux client does, and lasts at most probeTimeout.
const (
	maxProbeBytes = 64 << 20
	probeTimeout  = 30 * time.Second
)

// serveProbe answers a probe connection's commands until it ends.
func (e *Exposer) serveProbe(pc PeerConn) error {
	pc.SetDeadline(time.Now().Add(probeTimeout))
	if err := writeReply(pc, replyOK, featureProbe); err != nil {
		return err
	}
	var hdr [9]byte
	buf := make([]byte, bufSize)
	for {
		if _, err := io.ReadFull(pc, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				pc.CloseWrite()
				return nil
			}
			return err
		}
		n := binary.BigEndian.Uint64(hdr[1:])
		if n > maxProbeBytes {
			return fmt.Errorf("%w: probe of %d bytes (at most %d)", ErrProtocol, n, maxProbeBytes)
		}
		switch hdr[0] {
		case 'u':
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(pc, int64(n)), buf); err != nil {
				return err
			}
			if _, err := pc.Write([]byte{'u'}); err != nil {
				return err
			}
		case 'd':
			clear(buf)
			for left := int(n); left > 0; {
				m, err := pc.Write(buf[:min(left, len(buf))])
				if err != nil {
					return err
				}
				left -= m
			}
		default:
			return fmt.Errorf("%w: probe command %q", ErrProtocol, hdr[0])
		}
	}
}

// PathReport is what Check measured on the way to a peer.
type PathReport struct {
	// RTTs are round trips of yamux pings over the peer session, sorted.
	RTTs []time.Duration
	// Up and Down are throughput samples in bytes per second (zero when
	// not measured: the peer's keytunnel predates probes).
	Up, Down float64
	// Probed says whether the peer served the throughput probe.
	Probed bool
}

// MedianRTT is the middle of RTTs (zero if none).
func (r PathReport) MedianRTT() time.Duration {
	if len(r.RTTs) == 0 {
		return 0
	}
	return r.RTTs[len(r.RTTs)/2]
}

// Check dials remote as a Forwarder does (preamble, reply, yamux), measures
// pings round trips over the session, and if the peer serves probes sends
// and receives size bytes on a second connection to sample throughput.
// Errors are those a Forwarder would see (ErrRefused, ErrProtocol, the
// Dialer's).
func Check(ctx context.Context, d Dialer, remote key.PublicKey, pings, size int) (PathReport, error) {
	var r PathReport
	pc, err := d.Dial(ctx, remote)
	if err != nil {
		return r, err
	}
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	features, err := handshakeWith(pc, preamble, timeLeft(ctx, 30*time.Second))
	if err != nil {
		pc.Close()
		return r, err
	}
	sess, err := yamux.Client(pc, clientMuxConfig(loggerOr(nil)), clientMemory().newSpan)
	if err != nil {
		pc.Close()
		return r, err
	}
	for range pings {
		rtt, err := sess.Ping()
		if err != nil {
			sess.Close()
			return r, fmt.Errorf("tunnel: ping over the peer session: %w", err)
		}
		r.RTTs = append(r.RTTs, rtt)
	}
	sess.Close()
	sort.Slice(r.RTTs, func(i, j int) bool { return r.RTTs[i] < r.RTTs[j] })
	if _, ok := feature(features, featureProbe); !ok || size <= 0 {
		return r, nil
	}
	r.Up, r.Down, err = probe(ctx, d, remote, min(size, maxProbeBytes))
	r.Probed = err == nil
	return r, err
}

// probeChunks is how many pieces a sample is sent in; the rate is taken
// from the end of the first to the end of the last, so that the
// transport's start-up (a fresh udx stream's congestion control ramping up)
// does not count.
const probeChunks = 4

// probe opens a probe connection and times an upload and a download of
// size bytes each.
func probe(ctx context.Context, d Dialer, remote key.PublicKey, size int) (up, down float64, _ error) {
	pc, err := d.Dial(ctx, remote)
	if err != nil && ctx.Err() == nil {
		// The sample is a second dial of a peer the first just reached;
		// one that fails (a blind relay's pairing once timed out in CI)
		// gets one more try, so that a dial is not reported as the
		// tunnel failing under load.
		pc, err = d.Dial(ctx, remote)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %w", ErrProbeDial, err)
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	if _, err := handshakeWith(pc, probePreamble, timeLeft(ctx, 30*time.Second)); err != nil {
		return 0, 0, err
	}
	if dl, ok := ctx.Deadline(); ok {
		pc.SetDeadline(dl)
	}
	chunk := max(size/probeChunks, 1)
	cmd := func(c byte) []byte {
		return binary.BigEndian.AppendUint64([]byte{c}, uint64(chunk))
	}
	// Upload: the server acknowledges each chunk once it has read it.
	acks := make(chan []time.Time, 1)
	go func() {
		var at []time.Time
		var b [1]byte
		for range probeChunks {
			if _, err := io.ReadFull(pc, b[:]); err != nil || b[0] != 'u' {
				break
			}
			at = append(at, time.Now())
		}
		acks <- at
	}()
	buf := make([]byte, bufSize)
	for range probeChunks {
		if _, err := pc.Write(cmd('u')); err != nil {
			return 0, 0, err
		}
		for left := chunk; left > 0; {
			m, err := pc.Write(buf[:min(left, len(buf))])
			if err != nil {
				return 0, 0, err
			}
			left -= m
		}
	}
	at := <-acks
	if len(at) != probeChunks {
		return 0, 0, fmt.Errorf("tunnel: probe upload: %d of %d chunks acknowledged", len(at), probeChunks)
	}
	up = rate(chunk, at)
	// Download: the server sends the chunks back to back.
	for range probeChunks {
		if _, err := pc.Write(cmd('d')); err != nil {
			return up, 0, err
		}
	}
	at = at[:0]
	for range probeChunks {
		if n, err := io.CopyBuffer(io.Discard, io.LimitReader(pc, int64(chunk)), buf); err != nil || n != int64(chunk) {
			return up, 0, fmt.Errorf("tunnel: probe download ended early (%d of %d bytes of a chunk): %v", n, chunk, err)
		}
		at = append(at, time.Now())
	}
	return up, rate(chunk, at), nil
}

// rate is the bytes per second between the first and the last of at,
// chunk bytes apart.
func rate(chunk int, at []time.Time) float64 {
	el := at[len(at)-1].Sub(at[0]).Seconds()
	if el <= 0 {
		el = 1e-6
	}
	return float64(chunk*(len(at)-1)) / el
}

// timeLeft is ctx's remaining time, or def without a deadline.
func timeLeft(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return def
}
