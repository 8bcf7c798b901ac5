package blindrelay

import "github.com/keytunnel/keytunnel/internal/protomux"

// StartMux starts a protomux Mux over t and runs setup (which typically
// calls Server.Accept or NewClient) before the Mux reads its first frame.
//
// Why: protomux REJECTs a peer's OPEN that no local channel or PairFunc is
// waiting for. The reference opens its channel synchronously on the
// connection event, so the peer's OPEN — often already in flight right
// after the handshake — always finds it. A Go Mux reads on its own
// goroutine from the moment it starts, so opening the channel after
// protomux.New races with that first frame. Holding the first read back
// until setup returns closes the race.
//
// If setup fails the Mux is closed and its error returned.
func StartMux(t protomux.Framed, opts protomux.Options, setup func(*protomux.Mux) error) (*protomux.Mux, error) {
	g := &gatedFramed{Framed: t, open: make(chan struct{})}
	m := protomux.New(g, opts)
	var err error
	if setup != nil {
		err = setup(m)
	}
	close(g.open)
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// gatedFramed holds ReadMessage back until open is closed. Close passes
// through at once, so destroying the Mux during setup still works.
type gatedFramed struct {
	protomux.Framed
	open chan struct{}
}

func (g *gatedFramed) ReadMessage() ([]byte, error) {
	<-g.open
	return g.Framed.ReadMessage()
}
