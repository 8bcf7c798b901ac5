package app

import (
	"fmt"
	"strings"

	"github.com/keytunnel/keytunnel/internal/holesail"
	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/tunnel"
)

// udpPrefix marks a UDP target in expose's --service NAME=udp:PORT.
const udpPrefix = "udp:"

// parseServices reads expose's --service values, NAME=TARGET with TARGET
// PORT (on 127.0.0.1), HOST:PORT, unix:PATH, or udp:PORT / udp:HOST:PORT
// for a UDP service.
func parseServices(specs []string) ([]tunnel.Service, error) {
	var out []tunnel.Service
	for _, s := range specs {
		name, target, ok := strings.Cut(s, "=")
		if !ok || target == "" {
			return nil, fmt.Errorf("--service %q: want NAME=TARGET (TARGET: PORT, HOST:PORT, unix:PATH or udp:PORT)", s)
		}
		if err := tunnel.CheckServiceName(name); err != nil {
			return nil, fmt.Errorf("--service %q: %w", s, serviceErr(err))
		}
		svc := tunnel.Service{Name: name}
		target, svc.UDP = strings.CutPrefix(target, udpPrefix)
		addr, err := address("--service "+name, target, false)
		if err != nil {
			return nil, err
		}
		if svc.UDP && strings.HasPrefix(addr, "unix:") {
			return nil, fmt.Errorf("--service %q: a UDP service is a port, not a Unix socket", s)
		}
		svc.Target = addr
		out = append(out, svc)
	}
	if err := tunnel.CheckServices(out); err != nil {
		return nil, fmt.Errorf("--service: %w", serviceErr(err))
	}
	return out, nil
}

// serviceErr drops the package prefix of tunnel's ErrBadService.
func serviceErr(err error) error {
	return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), tunnel.ErrBadService.Error()+": "))
}

// parseServiceAllow reads expose's --allow values: KEY[,KEY...] for
// every service, NAME=KEY[,KEY...] for the service NAME alone.
func parseServiceAllow(list []string, svcs []tunnel.Service) (all []key.PublicKey, per map[string][]key.PublicKey, err error) {
	per = map[string][]key.PublicKey{}
	for _, s := range list {
		name, keys, named := strings.Cut(s, "=")
		if !named {
			ks, err := parseAllow([]string{s})
			if err != nil {
				return nil, nil, err
			}
			all = append(all, ks...)
			continue
		}
		if !hasService(svcs, name) {
			return nil, nil, fmt.Errorf("--allow %s=…: no --service named %q", name, name)
		}
		ks, err := parseAllow([]string{keys})
		if err != nil {
			return nil, nil, fmt.Errorf("--allow %s=…: %w", name, err)
		}
		if len(ks) == 0 {
			return nil, nil, fmt.Errorf("--allow %s=: no key given", name)
		}
		per[name] = append(per[name], ks...)
	}
	return all, per, nil
}

func hasService(svcs []tunnel.Service, name string) bool {
	for _, s := range svcs {
		if s.Name == name {
			return true
		}
	}
	return false
}

// splitService splits a client's KEY/NAME into the key and the service
// name; a holesail string (hs://…) names no service.
func splitService(arg string) (remote, service string, err error) {
	if holesail.IsURL(arg) {
		return arg, "", nil
	}
	i := strings.LastIndexByte(arg, '/')
	if i < 0 {
		return arg, "", nil
	}
	remote, service = arg[:i], arg[i+1:]
	if err := tunnel.CheckServiceName(service); err != nil {
		return "", "", fmt.Errorf("%q: the part after / names a service: %w", arg, serviceErr(err))
	}
	return remote, service, nil
}

// ServiceInfo is one service of an expose's "listening" event.
type ServiceInfo struct {
	Name    string `json:"name"` // empty: the positional target
	Target  string `json:"target"`
	UDP     bool   `json:"udp,omitempty"`
	Default bool   `json:"default,omitempty"` // what mux1, raw and KEY alone reach
	// Restricted: the service has an allow list.
	Restricted bool `json:"restricted,omitempty"`
	// Forward is the command that reaches it.
	Forward string `json:"forward"`
}

// serviceInfos describes an expose's services for its "listening" event
// and output: the positional target (when there is one) first.
func serviceInfos(pub key.PublicKey, target string, udp bool, allow []key.PublicKey, svcs []tunnel.Service) []ServiceInfo {
	var out []ServiceInfo
	fwd := func(name string, udp bool) string {
		s := "keytunnel forward "
		if udp {
			s += "--udp "
		}
		s += pub.String()
		if name != "" {
			s += "/" + name
		}
		return s
	}
	if target != "" {
		out = append(out, ServiceInfo{Target: target, UDP: udp, Default: true, Restricted: len(allow) > 0, Forward: fwd("", udp)})
	}
	for i, s := range svcs {
		out = append(out, ServiceInfo{Name: s.Name, Target: s.Target, UDP: s.UDP, Default: target == "" && i == 0,
			Restricted: len(s.Allow) > 0, Forward: fwd(s.Name, s.UDP)})
	}
	return out
}

// text is one service's line in expose's output.
func (s ServiceInfo) text() string {
	name := s.Name
	if name == "" {
		name = "(default)"
	} else if s.Default {
		name += " (default)"
	}
	what := s.Target
	if s.UDP {
		what = udpPrefix + what
	}
	if s.Restricted {
		what += ", allow list"
	}
	return fmt.Sprintf("service %s: %s; reach it with: %s", name, what, s.Forward)
}

// remoteService is env.remote for a client's KEY/NAME: the service, and
// the name of one of several behind its key (empty: the default).
func (e *Env) remoteService(arg string, s SecretOptions) (holesail.Conn, string, error) {
	service := ""
	if !s.Private {
		var err error
		if arg, service, err = splitService(arg); err != nil {
			return holesail.Conn{}, "", err
		}
	}
	c, err := e.remote(arg, s)
	return c, service, err
}

// noRawService refuses a named service over raw mode (--raw, holesail
// strings and servers), which has no way to name one.
func noRawService(raw bool, service string) error {
	if raw && service != "" {
		return fmt.Errorf("/%s names a service, which raw mode (--raw, a holesail server) cannot ask for; drop one or the other", service)
	}
	return nil
}

// withService is KEY/NAME, or KEY for the default service.
func withService(k key.PublicKey, service string) string {
	if service == "" {
		return k.String()
	}
	return k.String() + "/" + service
}
