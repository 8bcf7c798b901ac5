package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/stack"
	"github.com/keytunnel/keytunnel/tunnel"
)

// ForwardOptions are forward's arguments.
type ForwardOptions struct {
	// Remote is the service: a public key (KEY/NAME for the service
	// NAME of several behind it) or a holesail connection string; empty
	// or "-" when Secret names a private one.
	Remote string
	// Listen is PORT (on 127.0.0.1), HOST:PORT or unix:PATH; port 0 picks
	// one. Empty: the port of the service's holesail record, if it has
	// one, else a free one.
	Listen string
	Key    KeyOptions // our identity (for the service's allow list)
	Raw    bool       // hypertele/holesail servers
	Secret SecretOptions
	UDP    bool // a UDP service, forwarded to a local UDP socket
	Flows  tunnel.FlowOptions
}

// Forward opens o.Listen and tunnels every connection to the service
// behind o.Remote until ctx ends. The peer is dialed on the first local
// connection, and again when the session is lost.
func Forward(ctx context.Context, env *Env, o ForwardOptions) error {
	env.init()
	conn, service, err := env.remoteService(o.Remote, o.Secret)
	if err != nil {
		return err
	}
	remote := conn.PublicKey
	listen := o.Listen
	if listen == "" {
		listen = "0"
	}
	addr, err := address("listen address", listen, true)
	if err != nil {
		return err
	}
	kp, err := env.dialIdentity(conn, o.Key)
	if err != nil {
		return err
	}
	// As holesail-client, a forward of a holesail string without a port
	// listens where the service's record says, which takes the DHT;
	// otherwise a taken port fails before joining it.
	fromRecord := o.Listen == "" && holesailMode(conn)
	var sock io.Closer
	if !fromRecord {
		if sock, err = env.listenLocal(addr, o.UDP); err != nil {
			return err
		}
	}
	defer env.ignoreHangup("forward")()
	stop, err := env.observe("forward")
	if err != nil {
		if sock != nil {
			sock.Close()
		}
		return err
	}
	defer stop()
	nw, err := env.openNetwork(ctx)
	if err != nil {
		if sock != nil {
			sock.Close()
		}
		return err
	}
	defer nw.Close()
	env.reg.setNetwork(nw)
	raw, rec, err := env.holesailService(ctx, nw, conn, o.Raw, o.UDP)
	if err == nil {
		err = noRawService(raw, service)
	}
	if err != nil {
		if sock != nil {
			sock.Close()
		}
		return err
	}
	if fromRecord {
		if rec != nil {
			addr = recordListen(*rec)
		}
		if sock, err = env.listenLocal(addr, o.UDP); err != nil {
			return err
		}
	}
	local, what := localAddr(sock)
	to := withService(remote, service)
	env.out.emit(fmt.Sprintf("forwarding %s%s to %s", what, local, to), Event{
		Event: EvForwarding, Listen: local, Remote: remote.String(), Service: service, UDP: o.UDP,
	})
	env.ready("forwarding " + what + local + " to " + to)
	fo := tunnel.ForwardOptions{
		Raw:     raw,
		Service: service,
		Flows:   o.Flows,
		Logger:  env.logger,
		OnEvent: env.onEvent(""),
	}
	fw := newForwarder(nw.Dialer(kp, nil), remote, sock, fo)
	defer env.reg.add(&regTunnel{name: local, role: "forward", remote: remote.String(), service: service, local: local, udp: o.UDP, stats: fw.Stats})()
	return runUntil(ctx, fw)
}

// forwarder is a tunnel.Forwarder or tunnel.UDPForwarder.
type forwarder interface {
	Done() <-chan struct{}
	Err() error
	Close() error
	Stats() tunnel.Stats
}

// newForwarder forwards sock (from listenLocal) to remote: a UDP socket's
// datagrams as flows, a listener's connections as streams.
func newForwarder(d tunnel.Dialer, remote key.PublicKey, sock io.Closer, opts tunnel.ForwardOptions) forwarder {
	if pc, ok := sock.(net.PacketConn); ok {
		return tunnel.NewUDPForwarder(d, remote, pc, opts)
	}
	return tunnel.NewForwarder(d, remote, sock.(net.Listener), opts)
}

// localAddr is a forward socket's address, and "udp " for a UDP one.
func localAddr(sock io.Closer) (addr, what string) {
	if pc, ok := sock.(net.PacketConn); ok {
		return pc.LocalAddr().String(), "udp "
	}
	return stack.AddrString(sock.(net.Listener).Addr()), ""
}

// ConnectOptions are connect's arguments.
type ConnectOptions struct {
	Remote string // as ForwardOptions.Remote
	Key    KeyOptions
	Raw    bool
	Secret SecretOptions
}

// Connect joins stdin and stdout to the service behind o.Remote, for ssh's
// ProxyCommand. Stdout is the tunnel, so events and logs go to stderr.
func Connect(ctx context.Context, env *Env, o ConnectOptions) error {
	env.init()
	env.out.w = env.errw // before anything is printed
	if !env.LevelSet {
		// Under ssh, stderr is the user's terminal: only problems.
		env.setLevel(slog.LevelWarn)
	}
	if o.Key.SeedFile == "-" {
		return errors.New("connect: --seed-file - cannot read the seed from stdin, which is the tunnel; use --key FILE or " + SeedEnvVar)
	}
	if o.Secret.File == "-" {
		return errors.New("connect: --secret-file - cannot read the string from stdin, which is the tunnel; use --secret-file FILE or " + SecretEnvVar)
	}
	conn, service, err := env.remoteService(o.Remote, o.Secret)
	if err != nil {
		return err
	}
	remote := conn.PublicKey
	kp, err := env.dialIdentity(conn, o.Key)
	if err != nil {
		return err
	}
	stop, err := env.observe("connect")
	if err != nil {
		return err
	}
	defer stop()
	nw, err := env.openNetwork(ctx)
	if err != nil {
		return err
	}
	defer nw.Close()
	env.reg.setNetwork(nw)
	raw, _, err := env.holesailService(ctx, nw, conn, o.Raw, false)
	if err == nil {
		err = noRawService(raw, service)
	}
	if err != nil {
		return err
	}
	// Pipe keeps no counters (and tunnel is not where connect's belong):
	// the bytes are counted here, at stdin and stdout.
	cnt := &stdioCounter{since: time.Now()}
	defer env.reg.add(&regTunnel{name: "stdio", role: "connect", remote: remote.String(), service: service, stats: cnt.stats})()
	cnt.open.Store(1)
	defer cnt.open.Store(0)
	err = tunnel.Pipe(ctx, nw.Dialer(kp, nil), remote, stdio(env.Stdin, env.Stdout, cnt), tunnel.ForwardOptions{
		Raw:     raw,
		Service: service,
		Logger:  env.logger,
		OnEvent: env.onEvent(""),
	})
	switch {
	case ctx.Err() != nil:
		return nil
	case err == nil:
		return nil
	case errors.Is(err, tunnel.ErrRefused):
		return fmt.Errorf("%s refused us: %w", remote, err)
	case tunnel.PeerReset(err):
		return fmt.Errorf("%s reset the connection: the service behind it is down, or its limits refused this connection (the exposing side's log says why)", remote)
	}
	return fmt.Errorf("cannot reach %s: %w", remote, err)
}

// stdio is stdin and stdout as one half-closable ReadWriter, counting
// into c what it reads (sent to the peer) and writes (received). When
// stdin is a file, the result has SetReadDeadline so that Pipe can stop
// reading on error or Ctrl-C: the file's own when the runtime polls it (a
// non-blocking pipe), else an asyncReader's.
func stdio(r io.Reader, w io.Writer, c *stdioCounter) io.ReadWriter {
	var d interface{ SetReadDeadline(time.Time) error }
	if f, ok := r.(*os.File); ok {
		if f.SetReadDeadline(time.Time{}) == nil {
			d = f
		} else {
			a := newAsyncReader(f)
			r, d = a, a
		}
	}
	rw := stdioRW{countingReader{r, &c.sent}, countingWriter{w, &c.received}}
	if d == nil {
		return rw
	}
	return stdioDeadline{rw, d}
}

// stdioCounter is connect's counters, for status and --metrics: its one
// connection and the bytes through it.
type stdioCounter struct {
	since          time.Time
	sent, received atomic.Uint64
	open           atomic.Int64
}

func (c *stdioCounter) stats() tunnel.Stats {
	return tunnel.Stats{Since: c.since, BytesSent: c.sent.Load(), BytesReceived: c.received.Load(),
		ConnsOpen: c.open.Load(), ConnsTotal: 1}
}

type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(uint64(n))
	return n, err
}

type countingWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

// Close closes the writer if it can be: stdioRW.CloseWrite's half-close.
func (c countingWriter) Close() error {
	if cl, ok := c.w.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

type stdioRW struct {
	io.Reader
	io.Writer
}

// CloseWrite closes stdout: the service is done sending.
func (s stdioRW) CloseWrite() error {
	if c, ok := s.Writer.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

type stdioDeadline struct {
	stdioRW
	d interface{ SetReadDeadline(time.Time) error }
}

func (s stdioDeadline) SetReadDeadline(t time.Time) error { return s.d.SetReadDeadline(t) }

// SSHOptions are ssh's arguments: Args go to ssh as they are, the rest to
// the `keytunnel connect` of its ProxyCommand.
type SSHOptions struct {
	Args []string
	Key  KeyOptions
	Raw  bool
	// Secret: a private connection string (--secret-file or
	// $KEYTUNNEL_SECRET) for the service whose public key is the
	// destination's host; it reaches ProxyCommand's connect in
	// $KEYTUNNEL_SECRET, never on its command line.
	Secret SecretOptions
}

// ExitError ends the program with Code and no message (the command that
// failed, such as ssh, has said why).
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// SSH runs ssh with a ProxyCommand of `keytunnel connect %h`, so that
// `keytunnel ssh user@<key>` logs in to the host exposing its port 22
// under <key>.
func SSH(ctx context.Context, env *Env, o SSHOptions) error {
	env.init()
	if len(o.Args) == 0 {
		return errors.New("ssh needs a destination: keytunnel ssh [ssh options] user@<public key>")
	}
	kp, err := env.loadKey(o.Key)
	if err != nil {
		return err
	}
	o, private, err := env.sshHolesail(o)
	if err != nil {
		return err
	}
	proxy, err := env.proxyCommand(o)
	if err != nil {
		return err
	}
	prog := env.SSH
	if prog == "" {
		prog = "ssh"
	}
	cmd := exec.CommandContext(ctx, prog, append([]string{"-o", "ProxyCommand=" + proxy}, o.Args...)...)
	if _, file := o.Key.fromFile(); file == "" && o.Key.given() {
		// A seed that is not in a file reaches ProxyCommand's connect
		// through the environment, which other users cannot read, never
		// through its command line.
		seed := kp.Seed()
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%x", SeedEnvVar, seed[:]))
	}
	if private == "" && o.Secret.File != "" {
		sec, _, err := env.secret(o.Secret)
		if err != nil {
			return err
		}
		private = sec.String()
	}
	if private != "" {
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, SecretEnvVar+"="+private)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return ExitError{Code: ee.ExitCode()}
	}
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%s not found; install an OpenSSH client", prog)
	}
	return err
}

// proxyCommand is the ProxyCommand line: this executable with the global
// options that matter to connect, then connect %h.
func (e *Env) proxyCommand(o SSHOptions) (string, error) {
	self := e.Self
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return "", fmt.Errorf("cannot find the keytunnel executable for ProxyCommand: %w", err)
		}
	}
	args := []string{shellQuote(self)}
	if e.Bootstrap != nil {
		args = append(args, "--bootstrap", shellQuote(strings.Join(e.Bootstrap, ",")))
	}
	if e.LevelSet {
		args = append(args, "--log-level", shellQuote(strings.ToLower(e.Level.String())))
	}
	args = append(args, "connect")
	if _, file := o.Key.fromFile(); file != "" {
		abs, err := filepath.Abs(file)
		if err != nil {
			return "", err
		}
		args = append(args, "--key", shellQuote(abs))
	}
	if o.Raw {
		args = append(args, "--raw")
	}
	return strings.Join(append(args, "%h"), " "), nil
}

// shellQuote quotes s for the POSIX shell ssh runs ProxyCommand with; it
// also doubles %, which ssh would expand.
func shellQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./,:=@+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ParseSSHArgs takes keytunnel's options (--key FILE, --seed HEX,
// --seed-file FILE|-, --secret-file FILE|-, --raw, also as --key=FILE)
// from the front of args;
// the rest are ssh's.
func ParseSSHArgs(args []string) (SSHOptions, error) {
	var o SSHOptions
	for len(args) > 0 {
		a := args[0]
		name, val, hasVal := strings.Cut(a, "=")
		switch name {
		case "--raw":
			if hasVal {
				return o, fmt.Errorf("ssh: --raw takes no value")
			}
			o.Raw = true
			args = args[1:]
			continue
		case "--key", "--seed", "--seed-file", "--secret-file":
			if !hasVal {
				if len(args) < 2 {
					return o, fmt.Errorf("ssh: %s needs a value", name)
				}
				val = args[1]
				args = args[1:]
			}
			switch name {
			case "--seed":
				o.Key.Seed = val
			case "--seed-file":
				o.Key.SeedFile = val
			case "--secret-file":
				o.Secret.File = val
			default:
				o.Key.File = val
			}
			args = args[1:]
			continue
		case "--":
			args = args[1:]
		}
		break
	}
	o.Args = args
	return o, nil
}
