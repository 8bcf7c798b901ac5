package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// The floor is the least a tunnel of two processes joined by UDP can take
// for a new connection on this machine: two bare relays, run as processes
// on one P like keytunnel, one accepting TCP and sending each read as a
// datagram tagged with a connection number, the other dialling the target
// for each new number and sending replies back the same way. No
// encryption, no reliability, no flow control, no multiplexing protocol:
// what is left is the wake-ups and system calls that any such tunnel pays
// (client to relay, relay to relay, relay to target, and back). It serves
// BenchmarkNewConn only; under a bulk stream it would drop datagrams.
//
// The relays are this test binary started again with floorRoleEnv set.

const floorRoleEnv = "KEYTUNNEL_BENCH_FLOOR"

// floorBindEnv, when set, is the address a relay's UDP socket binds
// (default 127.0.0.1:0): BenchmarkWAN runs the relays in the lab's hosts,
// either side of its emulated link.
const floorBindEnv = "KEYTUNNEL_BENCH_FLOOR_BIND"

func viaFloor(tb testing.TB, svc string) (string, []int) {
	return startRelays(tb, floorRoleEnv, "in", "out", svc, "tcp ")
}

// startRelays starts the two relays of a floor: the server's side
// (srvRole, towards svc), which prints "udp ADDR", and the client's side
// (cliRole, towards that address), which prints cliPrefix and the address
// to reach svc by. It returns that address and both processes.
func startRelays(tb testing.TB, env, srvRole, cliRole, svc, cliPrefix string) (string, []int) {
	srv := startRelay(tb, env, srvRole, svc)
	peer := strings.TrimPrefix(srv.Line("udp ", 10*time.Second), "udp ")
	cli := startRelay(tb, env, cliRole, peer)
	return strings.TrimPrefix(cli.Line(cliPrefix, 10*time.Second), cliPrefix), []int{srv.Pid(), cli.Pid()}
}

// startRelay starts this test binary as a relay of one of the floors:
// env (the floor's role variable) set to "role arg", on one P.
func startRelay(tb testing.TB, env, role, arg string) *proctest.Proc {
	return startRelayIn(tb, nil, nil, env, role, arg)
}

// startRelayIn is startRelay with a command prefix (a lab host's
// ExecPrefix) and more environment.
func startRelayIn(tb testing.TB, prefix, extra []string, env, role, arg string) *proctest.Proc {
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	argv := append(append([]string(nil), prefix...), exe, "-test.run=^$")
	cmd := exec.Command(argv[0], argv[1:]...)
	return proctest.StartCmd(tb, cmd, append(append(os.Environ(), env+"="+role+" "+arg, "GOMAXPROCS=1"), extra...))
}

// runFloor serves as one relay if the environment asks for it, until
// killed, and reports whether it did.
func runFloor() bool {
	v := os.Getenv(floorRoleEnv)
	if v == "" {
		return false
	}
	role, arg, _ := strings.Cut(v, " ")
	bind := os.Getenv(floorBindEnv)
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	pc, err := net.ListenPacket("udp4", bind)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r := &floorRelay{pc: pc, conns: map[uint32]*floorConn{}}
	switch role {
	case "in":
		r.target = arg
		fmt.Println("udp", pc.LocalAddr())
		r.readUDP()
	case "out":
		peer, err := net.ResolveUDPAddr("udp4", arg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r.peer = peer
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("tcp", ln.Addr())
		go r.readUDP()
		for id := uint32(1); ; id++ {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			r.add(id, c)
			go r.readTCP(id, c)
		}
	}
	return true
}

// floorRelay datagrams: 4-byte big-endian connection number, then the
// bytes read; no bytes means the sender's side of the connection ended.
type floorRelay struct {
	pc     net.PacketConn
	target string // "in" only

	mu    sync.Mutex
	peer  net.Addr // "out": the "in" relay; "in": learnt from the first datagram
	conns map[uint32]*floorConn
}

type floorConn struct {
	net.Conn
	ended int // directions ended; at 2 the connection is closed
}

func (r *floorRelay) add(id uint32, c net.Conn) {
	r.mu.Lock()
	r.conns[id] = &floorConn{Conn: c}
	r.mu.Unlock()
}

func (r *floorRelay) end(id uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fc := r.conns[id]; fc != nil {
		if fc.ended++; fc.ended == 2 {
			fc.Close()
			delete(r.conns, id)
		}
	}
}

func (r *floorRelay) readTCP(id uint32, c net.Conn) {
	r.mu.Lock()
	peer := r.peer
	r.mu.Unlock()
	buf := make([]byte, 1400)
	binary.BigEndian.PutUint32(buf, id)
	for {
		n, err := c.Read(buf[4:])
		if n > 0 {
			r.pc.WriteTo(buf[:4+n], peer)
		}
		if err != nil {
			r.pc.WriteTo(buf[:4], peer)
			r.end(id)
			return
		}
	}
}

func (r *floorRelay) readUDP() {
	buf := make([]byte, 1500)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			os.Exit(1)
		}
		if n < 4 {
			continue
		}
		id := binary.BigEndian.Uint32(buf)
		r.mu.Lock()
		fc := r.conns[id]
		if r.peer == nil {
			r.peer = from
		}
		r.mu.Unlock()
		if fc == nil && r.target != "" && n > 4 {
			c, err := net.Dial("tcp", r.target)
			if err != nil {
				continue
			}
			r.add(id, c)
			go r.readTCP(id, c)
			fc = &floorConn{Conn: c}
		}
		if fc == nil {
			continue
		}
		if n == 4 {
			if tc, ok := fc.Conn.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			r.end(id)
			continue
		}
		fc.Write(buf[4:n])
	}
}
