package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// StatusReport is `keytunnel status --json`'s output.
type StatusReport struct {
	Processes []ProcessStatus `json:"processes"`
}

// Status lists what every keytunnel process of this user runs: it asks
// each control socket in the run directory, removes the sockets of
// processes that are gone, and prints one block per process (one JSON
// object with --json).
func Status(ctx context.Context, env *Env) error {
	env.init()
	dir, err := env.runDir()
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	rep := StatusReport{Processes: []ProcessStatus{}}
	for _, de := range entries {
		pid := socketPID(de.Name())
		if pid == 0 {
			continue
		}
		path := filepath.Join(dir, de.Name())
		ps, err := queryProcess(ctx, path)
		switch {
		case err == nil:
			rep.Processes = append(rep.Processes, ps)
		case errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) || !alive(pid):
			// Nobody listens: the process died without removing it.
			os.Remove(path)
			env.logger.Debug("removed the stale control socket of a process that is gone", "path", path)
		default:
			env.logger.Warn("a keytunnel process does not answer on its control socket", "pid", pid, "path", path, "err", err)
		}
	}
	sort.Slice(rep.Processes, func(i, j int) bool { return rep.Processes[i].PID < rep.Processes[j].PID })
	if env.JSON {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		env.out.write(append(b, '\n'))
		return nil
	}
	if len(rep.Processes) == 0 {
		env.out.write([]byte("no keytunnel process is running (as this user)\n"))
		return nil
	}
	var b strings.Builder
	writeStatus(&b, rep, time.Now())
	env.out.write([]byte(b.String()))
	return nil
}

// writeStatus prints rep for a person: per process a header line, per
// tunnel a line and its counters, per peer a line.
func writeStatus(w io.Writer, rep StatusReport, now time.Time) {
	for i, p := range rep.Processes {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "pid %d: %s, running for %s\n", p.PID, p.Command, ago(now, p.Started))
		for _, t := range p.Tunnels {
			name := ""
			if t.Name != "" && t.Name != t.Target && t.Name != t.Listen && t.Role != "connect" {
				name = t.Name + ": " // an up entry
			}
			conns, proto := "connections", ""
			if t.UDP {
				conns, proto = "flows", "udp " // its connections are flows
			}
			switch t.Role {
			case "expose":
				fmt.Fprintf(w, "  %sexpose %s%s as %s\n", name, proto, t.Target, t.PublicKey)
			case "connect":
				fmt.Fprintf(w, "  connect stdio to %s\n", t.remoteText())
			default:
				fmt.Fprintf(w, "  %s%s %s%s to %s\n", name, t.Role, proto, t.Listen, t.remoteText())
			}
			fmt.Fprintf(w, "    sent %s, received %s; %s %d open, %d total; redials %d; since %s\n",
				bytesText(t.BytesSent), bytesText(t.BytesReceived), conns, t.ConnectionsOpen, t.ConnectionsTotal, t.Redials, ago(now, t.Since))
			if t.Role == "connect" {
				continue // Pipe does not say its path
			}
			if len(t.Peers) == 0 {
				fmt.Fprintf(w, "    no peer connected\n")
			}
			for _, pr := range t.Peers {
				rtt := "rtt unknown"
				if pr.RTTMillis > 0 {
					rtt = fmt.Sprintf("rtt %.1f ms", pr.RTTMillis)
				}
				path := pr.Path
				if path == "" {
					path = "path unknown"
				}
				fmt.Fprintf(w, "    peer %s (%s): %s, %s, up %s\n", pr.PublicKey, pr.Mode, path, rtt, ago(now, pr.Since))
			}
		}
		if sv := p.Server; sv != nil {
			what := sv.Listen
			if sv.PublicKey != "" {
				what = sv.PublicKey
			}
			var cs []string
			for _, k := range sortedKeys(sv.Counters) {
				cs = append(cs, fmt.Sprintf("%s %d", strings.ReplaceAll(k, "_", " "), sv.Counters[k]))
			}
			fmt.Fprintf(w, "  %s %s\n    %s; since %s\n", sv.Role, what, strings.Join(cs, ", "), ago(now, sv.Since))
		}
		if d := p.DHT; d != nil {
			var hs []string
			for _, o := range sortedKeys(d.Handshakes) {
				if d.Handshakes[o] > 0 {
					hs = append(hs, fmt.Sprintf("%d %s", d.Handshakes[o], o))
				}
			}
			if len(hs) == 0 {
				hs = []string{"none"}
			}
			fmt.Fprintf(w, "  dht: %d nodes, %d requests (%d timed out); handshakes answered: %s; dials %d (%d failed); holepunch %d of %d; relay fallbacks %d, upgrades %d\n",
				d.RoutingNodes, d.Requests, d.Timeouts, strings.Join(hs, ", "), d.Dials, d.DialFailures,
				d.HolepunchSuccesses, d.HolepunchAttempts, d.RelayFallbacks, d.RelayUpgrades)
		}
	}
}

func sortedKeys(m map[string]uint64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ago is how long ago t was, rounded for reading.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// bytesText is n in B, KB, MB or GB (powers of 1000).
func bytesText(n uint64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%d B", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.1f KB", float64(n)/1e3)
	case n < 1000*1000*1000:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%.2f GB", float64(n)/1e9)
}

// remoteText is KEY, or KEY/NAME for a named service.
func (t TunnelStatus) remoteText() string {
	if t.Service == "" {
		return t.Remote
	}
	return t.Remote + "/" + t.Service
}
