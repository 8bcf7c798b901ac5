package tunnel

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Service is one named target of an Exposer that serves several under
// one key (ExposeOptions.Services). Clients name it in their stream
// headers (a mux2 session, see doc.go); mux1 and raw clients reach the
// default service only.
type Service struct {
	// Name is what clients ask for: 1 to 63 bytes of a-z, 0-9, '-', '_'
	// and '.' (CheckServiceName).
	Name string
	// Target is host:port, or unix:PATH for a TCP service.
	Target string
	// UDP makes the target a UDP service (host:port), reached as flows.
	UDP bool
	// Allow lists the keys that may use this service; empty allows
	// everyone. ExposeOptions.Allow does not apply to it.
	Allow AllowList
}

// maxNameLen bounds a service name as the command line and config accept
// it; the wire allows longer (maxServiceName), for later.
const maxNameLen = 63

// CheckServiceName says whether name can name a Service.
func CheckServiceName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w: name %q must be 1 to %d bytes", ErrBadService, name, maxNameLen)
	}
	if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != "" {
		return fmt.Errorf("%w: name %q may hold only a-z, 0-9, '-', '_' and '.'", ErrBadService, name)
	}
	return nil
}

// CheckServices reports the first invalid or repeated name in svcs.
func CheckServices(svcs []Service) error {
	seen := map[string]bool{}
	for _, s := range svcs {
		if err := CheckServiceName(s.Name); err != nil {
			return err
		}
		if seen[s.Name] {
			return fmt.Errorf("%w: service %q named twice", ErrBadService, s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

// SessionAllow is the allow list of the peer sessions of an Exposer whose
// services have these lists (the positional target's ExposeOptions.Allow
// among them): the union, and so nil (everyone) when any list is empty.
// It is what the DHT listener's firewall should use; each stream is then
// checked against its own service's list.
func SessionAllow(lists ...AllowList) AllowList {
	u := AllowList{}
	for _, l := range lists {
		if len(l) == 0 {
			return nil
		}
		for k := range l {
			u[k] = struct{}{}
		}
	}
	if len(u) == 0 {
		return nil
	}
	return u
}

// service is a Service as an Exposer serves it.
type service struct {
	Service
	dial func(ctx context.Context, addr string) (net.Conn, error)
}

// label names s in refusals.
func (e *Exposer) label(s *service) string {
	switch {
	case s.Name != "":
		return fmt.Sprintf("service %q", s.Name)
	case len(e.names) > 0:
		return "the default service"
	}
	return "the service"
}

// kindAdvice is what a client of the wrong kind (TCP vs UDP) of s should
// do.
func (s *service) kindAdvice() string {
	if s.UDP {
		return "UDP; forward it with --udp"
	}
	return "TCP; forward it without --udp"
}

// initServices sets up e's services: the positional target (when set)
// is the default, named ""; else the first of opts.Services is. Of
// repeated names the first counts (CheckServices reports them).
func (e *Exposer) initServices(target string, opts ExposeOptions) {
	e.services = map[string]*service{}
	add := func(s Service) *service {
		if _, dup := e.services[s.Name]; dup {
			return nil
		}
		sv := &service{Service: s, dial: opts.DialTarget}
		if sv.dial == nil {
			sv.dial = DialTarget
			if s.UDP {
				sv.dial = dialUDPTarget
			}
		}
		e.services[s.Name] = sv
		if s.Name != "" {
			e.names = append(e.names, s.Name)
		}
		return sv
	}
	if target != "" || len(opts.Services) == 0 {
		e.def = add(Service{Target: target, UDP: opts.UDP, Allow: opts.Allow})
	}
	for _, s := range opts.Services {
		if sv := add(s); sv != nil && e.def == nil {
			e.def = sv
		}
	}
	lists := make([]AllowList, 0, len(e.services))
	for _, s := range e.services {
		lists = append(lists, s.Allow)
		e.anyUDP = e.anyUDP || s.UDP
	}
	e.sessionAllow = SessionAllow(lists...)
}

// lookup returns the service a stream header names: the default for "".
func (e *Exposer) lookup(name string) *service {
	if name == "" {
		return e.def
	}
	return e.services[name]
}

// unknownService is the refusal reason for a name e does not serve.
func (e *Exposer) unknownService(name string) string {
	if len(e.names) == 0 {
		return fmt.Sprintf("no service %q behind this key (it serves one unnamed service)", name)
	}
	return fmt.Sprintf("no service %q behind this key (it serves: %s)", name, strings.Join(e.names, ", "))
}

// dialUDPTarget connects a UDP socket to a UDP target.
func dialUDPTarget(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if uc, ok := c.(*net.UDPConn); ok {
		// Room for a burst of replies (1 MiB: 800 of 1200 bytes) while
		// the flow's sender catches up.
		uc.SetReadBuffer(1 << 20)
	}
	return c, err
}

// serviceStream is a TCP stream to a named service, as a client sees it:
// its header is sent, and the first Read takes the server's reply to it
// before any of the service's bytes. A refusal ends the stream with an
// error wrapping ErrRefused and the server's reason, which refused keeps.
type serviceStream struct {
	muxStream
	replied bool
	refused error
}

// openServiceStream writes the header of a TCP stream to service on st.
// It does not wait for the reply: the client's first bytes follow at
// once, so a stream costs no round trip.
func openServiceStream(st muxStream, service string) (*serviceStream, error) {
	if _, err := st.Write(appendStreamHeader(nil, streamHeader{kind: kindTCP, service: service})); err != nil {
		return nil, err
	}
	return &serviceStream{muxStream: st}, nil
}

func (s *serviceStream) Read(b []byte) (int, error) {
	if !s.replied {
		s.replied = true
		if err := readStreamReply(s.muxStream); err != nil {
			s.refused = err
			return 0, err
		}
	}
	return s.muxStream.Read(b)
}

// openServiceConn opens a stream to service on st for a Client and
// waits for the server's reply.
func openServiceConn(ctx context.Context, st muxStream, remote key.PublicKey, service string) (PeerConn, error) {
	ss, err := openServiceStream(st, service)
	if err != nil {
		st.Reset()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Now()) })
	ss.replied = true
	err = readStreamReply(st)
	if !stop() && err != nil {
		err = ctx.Err()
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	st.SetReadDeadline(time.Time{})
	return serviceConn{ss, remote}, nil
}

// serviceConn is a Client's connection to a named service.
type serviceConn struct {
	*serviceStream
	remote key.PublicKey
}

func (c serviceConn) RemotePublicKey() key.PublicKey { return c.remote }
