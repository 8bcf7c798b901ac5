package tunnel

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// serving is the lifecycle Exposer and Forwarder share: a context their
// goroutines watch, one accept loop on a listener they own, Done and Err
// for the loop's end, and an idempotent Close that cancels, closes the
// listener and waits for every goroutine.
type serving struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}
	err    error // why the accept loop ended; read after done
	ln     io.Closer

	closeOnce sync.Once
}

func (s *serving) init(ln io.Closer) {
	s.ln = ln
	s.done = make(chan struct{})
	s.ctx, s.cancel = context.WithCancel(context.Background())
}

// Done is closed when the accept loop ends.
func (s *serving) Done() <-chan struct{} { return s.done }

// Err is the listener's error if it failed; nil after Close or while it
// is still accepting.
func (s *serving) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close stops accepting, closes every connection (their goroutines watch
// the context) and waits for all goroutines. It is idempotent.
func (s *serving) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.ln.Close()
	})
	s.wg.Wait()
	return nil
}

// startAccepting runs accept in a loop the serving owns, each accepted
// connection served in a goroutine of its own. A listener failure that is
// not Close's doing is logged as what failed and kept for Err.
func startAccepting[T any](s *serving, log *slog.Logger, what string, accept func() (T, error), serve func(T)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.done)
		for {
			c, err := accept()
			if err != nil {
				if s.ctx.Err() == nil {
					s.err = err
					log.Error(what+" listener failed", "err", err)
				}
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				serve(c)
			}()
		}
	}()
}

// runUntil serves until ctx ends or the accept loop does, then closes and
// returns the listener's error, else ctx's.
func runUntil(ctx context.Context, s *serving) error {
	select {
	case <-ctx.Done():
	case <-s.done:
	}
	s.Close()
	if err := s.Err(); err != nil {
		return err
	}
	return ctx.Err()
}
