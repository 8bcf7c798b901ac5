package protomux

import "context"

// inject runs frame f through the dispatcher as if it had been read, and
// waits until it (and the callbacks it queued) have run.
func (m *Mux) inject(ctx context.Context, f []byte) error {
	done := make(chan error, 1)
	m.mu.Lock()
	m.postLocked(func() { done <- m.onFrame(f) })
	m.mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			m.Destroy(err)
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	return m.sync(ctx)
}

// sync waits until the dispatcher has run everything queued so far.
func (m *Mux) sync(ctx context.Context) error {
	done := make(chan struct{})
	m.mu.Lock()
	m.postLocked(func() { close(done) })
	m.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
