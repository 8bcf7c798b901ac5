package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The control socket: every long-running keytunnel process (expose,
// forward, connect, up, node, relay, dht-relay, testnet) listens on a
// Unix socket of its own, <RunDir>/keytunnel-<pid>.sock, mode 0600 in a
// 0700 directory, so that only its user can ask it anything. `keytunnel status` connects to each
// socket there.
//
// The protocol is one JSON object a line: the client sends a request
// ({"get":"status"}), the process answers with one object (a
// ProcessStatus, or {"error":"..."}) and closes. Requests are bounded
// (4 KiB, 5 s), so a stuck or hostile client costs a goroutine for a
// moment, no more.

// controlRequest is a control socket request.
type controlRequest struct {
	Get string `json:"get"`
}

const (
	controlTimeout   = 5 * time.Second
	controlMaxReq    = 4 << 10
	controlPrefix    = "keytunnel-"
	controlSuffix    = ".sock"
	runDirName       = "keytunnel"
	runDirFallback   = "run" // under the config dir, without XDG_RUNTIME_DIR
	controlGetStatus = "status"
	maxSocketPath    = 108 // sun_path on Linux, with its terminating NUL
)

var errNoDHT = errors.New("no DHT node of its own (a dht-relay client)")

// runDir is where control sockets live: $XDG_RUNTIME_DIR/keytunnel (a
// per-user tmpfs on systemd machines, cleared at logout), else
// <user config dir>/keytunnel/run.
func (e *Env) runDir() (string, error) {
	if e.RunDir != "" {
		return e.RunDir, nil
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, runDirName), nil
	}
	d, err := userConfigDir()
	if err != nil {
		return "", fmt.Errorf("no directory for control sockets: %w, or set XDG_RUNTIME_DIR", err)
	}
	return filepath.Join(d, "keytunnel", runDirFallback), nil
}

// controlServer answers on this process's control socket.
type controlServer struct {
	ln   net.Listener
	path string
	reg  *registry
	wg   sync.WaitGroup
	once sync.Once
}

// startControl opens the control socket. A process that cannot (no
// writable run directory, a path too long for a Unix socket) still runs;
// status just cannot see it, which a warning says, or a debug line for
// connect, whose stderr under ssh is for the session's problems.
func (e *Env) startControl(quiet bool) (stop func()) {
	warn := e.logger.Warn
	if quiet {
		warn = e.logger.Debug
	}
	dir, err := e.runDir()
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err == nil {
		// MkdirAll leaves an existing directory's mode alone; the socket's
		// privacy rests on this one.
		err = os.Chmod(dir, 0o700)
	}
	if err != nil {
		warn("no control socket: keytunnel status will not list this process", "err", err)
		return func() {}
	}
	path := filepath.Join(dir, controlPrefix+strconv.Itoa(os.Getpid())+controlSuffix)
	if len(path) >= maxSocketPath {
		warn("no control socket: its path is too long for a Unix socket; keytunnel status will not list this process (set XDG_RUNTIME_DIR to a shorter directory)", "path", path)
		return func() {}
	}
	os.Remove(path) // a stale socket of a process that had our pid
	ln, err := net.Listen("unix", path)
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		warn("no control socket: keytunnel status will not list this process", "path", path, "err", err)
		return func() {}
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	s := &controlServer{ln: ln, path: path, reg: &e.reg}
	s.wg.Add(1)
	go s.serve()
	e.logger.Debug("control socket", "path", path)
	return s.close
}

func (s *controlServer) close() {
	s.once.Do(func() { s.ln.Close() })
	s.wg.Wait()
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: wait rather than spin.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.answer(c)
		}()
	}
}

func (s *controlServer) answer(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(controlTimeout))
	// ReadSlice fails on a line longer than the buffer: requests are
	// small.
	line, err := bufio.NewReaderSize(c, controlMaxReq).ReadSlice('\n')
	if err != nil {
		return
	}
	var req controlRequest
	var reply any
	switch err := json.Unmarshal(line, &req); {
	case err != nil:
		reply = map[string]string{"error": "bad request: " + err.Error()}
	case req.Get == controlGetStatus:
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		reply = s.reg.snapshot(ctx)
		cancel()
	default:
		reply = map[string]string{"error": fmt.Sprintf("unknown request %q", req.Get)}
	}
	b, _ := json.Marshal(reply)
	c.Write(append(b, '\n'))
}

// queryProcess asks the process behind the control socket at path for its
// status.
func queryProcess(ctx context.Context, path string) (ProcessStatus, error) {
	var ps ProcessStatus
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return ps, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req, _ := json.Marshal(controlRequest{Get: controlGetStatus})
	if _, err := c.Write(append(req, '\n')); err != nil {
		return ps, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return ps, err
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(line, &e) == nil && e.Error != "" {
		return ps, errors.New(e.Error)
	}
	if err := json.Unmarshal(line, &ps); err != nil {
		return ps, fmt.Errorf("bad answer: %w", err)
	}
	return ps, nil
}

// socketPID is the pid in a control socket's name, or 0 if the name is
// not one.
func socketPID(name string) int {
	s, ok := strings.CutPrefix(name, controlPrefix)
	if !ok {
		return 0
	}
	s, ok = strings.CutSuffix(s, controlSuffix)
	if !ok {
		return 0
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
