package tunnel

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Pipe connects rw (stdin and stdout, for ssh's ProxyCommand) to the
// service behind remote over one stream, and returns when both directions
// have ended, or on the first error, or when ctx ends.
//
// An EOF read from rw becomes a half-close towards the service; the
// service's EOF calls rw's CloseWrite, if it has one (close stdout there).
// If rw has SetReadDeadline (os.Stdin does when it is a pipe), Pipe uses it
// to stop reading on error or cancellation; otherwise it must wait for rw's
// Read to return before it can.
func Pipe(ctx context.Context, d Dialer, remote key.PublicKey, rw io.ReadWriter, opts ForwardOptions) error {
	opts.defaults()
	log := loggerOr(opts.Logger).With("remote", remote.String())
	emit := emitter(opts.OnEvent)
	dctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	if opts.Raw {
		pc, err := d.Dial(dctx, remote)
		if err != nil {
			return err
		}
		emit.emit(Event{Kind: EventConnected, Remote: remote, Mode: "raw"})
		err = join(ctx, rwConn{rw}, pc, nil, nil)
		emit.emit(Event{Kind: EventDisconnected, Remote: remote, Mode: "raw", Err: err})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	pre := preamble
	if opts.Service != "" {
		pre = preamble2
	}
	// The stream opens, and rw's first bytes (an ssh client's banner) go
	// out, before the server's reply to the preamble comes back.
	sess, err := startSession(dctx, d, remote, pre, log, func() {
		emit.emit(Event{Kind: EventConnected, Remote: remote, Mode: "mux"})
	})
	if err != nil {
		return err
	}
	defer sess.Close()
	err = pipeStream(ctx, sess, rw, opts.Service)
	// Read before Close, which would fail a reply still to come.
	rerr := sess.replyErr()
	sess.Close()
	if rerr != nil {
		if errors.Is(rerr, ErrRefused) {
			emit.emit(Event{Kind: EventRefused, Remote: remote, Mode: "mux", Err: rerr})
		}
		return rerr
	}
	emit.emit(Event{Kind: EventDisconnected, Remote: remote, Mode: "mux", Err: err})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// pipeStream runs rw over a new stream of sess (to service, if named).
func pipeStream(ctx context.Context, sess *session, rw io.ReadWriter, service string) error {
	st, err := sess.OpenStream(ctx)
	if err != nil {
		return err
	}
	ms := sess.gate.stream(st)
	var peer conn = ms
	if service != "" {
		if peer, err = openServiceStream(ms, service); err != nil {
			return err
		}
	}
	return join(ctx, rwConn{rw}, peer, nil, nil)
}

// rwConn lets join drive a caller's ReadWriter. Close is a no-op because
// Pipe does not own rw.
type rwConn struct{ rw io.ReadWriter }

func (c rwConn) Read(b []byte) (int, error)  { return c.rw.Read(b) }
func (c rwConn) Write(b []byte) (int, error) { return c.rw.Write(b) }
func (c rwConn) Close() error                { return nil }

func (c rwConn) CloseWrite() error {
	if cw, ok := c.rw.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c rwConn) SetDeadline(t time.Time) error {
	if d, ok := c.rw.(interface{ SetReadDeadline(time.Time) error }); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}
