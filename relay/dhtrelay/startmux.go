package dhtrelay

import "github.com/keytunnel/keytunnel/internal/protomux"

// startMux starts a Mux over t with the relay channel already open: a
// Mux reads from the moment it starts, and a peer OPEN read before the
// channel exists is rejected, so the first read waits for NewChannel.
func startMux(t protomux.Framed, opts protomux.Options, chOpts ChannelOptions) (*protomux.Mux, *Channel, error) {
	h := &heldFramed{Framed: t, open: make(chan struct{})}
	m := protomux.New(h, opts)
	ch, err := NewChannel(m, chOpts)
	close(h.open)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, ch, nil
}

// heldFramed holds ReadMessage back until open is closed; Close passes
// through at once.
type heldFramed struct {
	protomux.Framed
	open chan struct{}
}

func (h *heldFramed) ReadMessage() ([]byte, error) {
	<-h.open
	return h.Framed.ReadMessage()
}
