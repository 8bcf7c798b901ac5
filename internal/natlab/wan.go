package natlab

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Option changes how Host or NAT attaches to its router.
type Option func(*attachOpts)

type attachOpts struct {
	wan *Profile
}

// WAN makes the new host's (or NAT's) link to its router an emulated WAN
// link with profile p instead of a bare veth pair.
func WAN(p Profile) Option {
	return func(o *attachOpts) { o.wan = &p }
}

// Direction is one way across a WAN link.
type Direction int

const (
	// Up is from the host (or NAT) to its router.
	Up Direction = iota
	// Down is from the router to the host (or NAT).
	Down
)

func (d Direction) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Link is an emulated WAN link: a TUN device in the router's namespace and
// one in the host's, joined by a forwarder in this process that runs each
// direction's packets through a Pipe. It owns one reader and one writer
// goroutine per direction; the lab closes it.
type Link struct {
	profile Profile
	dirs    [2]*wanDir
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// wanDir is one direction: packets read from `from` go through pipe and
// are written to `to` when due.
type wanDir struct {
	from, to *os.File
	done     chan struct{}
	// timer is a timerfd the writer waits on through the runtime poller:
	// Go's own timers round waits below a millisecond up to one (the
	// poller's epoll timeout is in milliseconds), which alone would add
	// up to 1 ms each way; a timerfd fires within microseconds.
	timer *os.File
	tfd   int

	mu         sync.Mutex
	pipe       *Pipe
	sleepUntil time.Time // when the writer will next look, if it sleeps
	free       [][]byte
	err        error // first read or write error other than closing
}

// Profile is the link's profile.
func (k *Link) Profile() Profile { return k.profile }

// Stats returns a direction's counters so far (a copy).
func (k *Link) Stats(d Direction) PipeStats {
	w := k.dirs[d]
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.pipe.Stats()
	s.Sojourn.counts = append([]uint64(nil), s.Sojourn.counts...)
	return s
}

// ResetSojourn clears both directions' queue sojourn histograms.
func (k *Link) ResetSojourn() {
	for _, w := range k.dirs {
		w.mu.Lock()
		w.pipe.ResetSojourn()
		w.mu.Unlock()
	}
}

// Err returns the first I/O error either direction's forwarder hit, if
// any (a forwarder stops at its first error).
func (k *Link) Err() error {
	var errs []error
	for _, w := range k.dirs {
		w.mu.Lock()
		errs = append(errs, w.err)
		w.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Close stops the forwarder and closes the TUN devices (which removes
// them). It is idempotent.
func (k *Link) Close() error {
	k.once.Do(func() {
		close(k.done)
		for _, w := range k.dirs {
			w.from.Close() // the other direction's `to`
			w.timer.Close()
		}
		k.wg.Wait()
	})
	return nil
}

// openTUN creates TUN device name inside namespace ns (a TUN device lives
// in the namespace of the process that creates it) and returns it as a
// non-blocking file, so that the runtime poller waits for it and Close
// interrupts a Read. The device goes away when the file is closed.
func openTUN(ns, name string) (*os.File, error) {
	var f *os.File
	err := inNetns(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("natlab: open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("natlab: tun %s: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("natlab: TUNSETIFF %s in %s: %w", name, ns, err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	return f, err
}

// attachWAN is attach with an emulated WAN link: TUN device port in rns,
// TUN device ifname in ns, and a forwarder between them. TUN devices are
// point to point (no ARP), so the router needs no proxy ARP: it routes
// addr/32 to the port, and the host reaches everything in its subnet
// directly over ifname.
func (l *Lab) attachWAN(rns, port, ns, ifname string, addr netip.Addr, bits int, p Profile) *Link {
	l.t.Helper()
	pipes := [2]*Pipe{}
	for d, im := range []Impair{p.Up, p.Down} {
		seed := fnv.New64a()
		fmt.Fprintf(seed, "%s %s %d", rns, port, d)
		pipe, err := NewPipe(im, seed.Sum64())
		if err != nil {
			l.t.Fatalf("natlab: profile %s %v: %v", p.Name, Direction(d), err)
		}
		pipes[d] = pipe
	}
	rf, err := openTUN(rns, port)
	l.must(err)
	hf, err := openTUN(ns, ifname)
	if err != nil {
		rf.Close()
		l.t.Fatalf("%v", err)
	}
	k := &Link{profile: p, done: make(chan struct{})}
	k.dirs[Up] = &wanDir{from: hf, to: rf, pipe: pipes[Up]}
	k.dirs[Down] = &wanDir{from: rf, to: hf, pipe: pipes[Down]}
	for _, w := range k.dirs {
		w.done = k.done
		w.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
		if err != nil {
			rf.Close()
			hf.Close()
			l.t.Fatalf("natlab: timerfd: %v", err)
		}
		w.timer = os.NewFile(uintptr(w.tfd), "timerfd")
	}
	l.track(k)
	for _, w := range k.dirs {
		k.wg.Add(2)
		go func() { defer k.wg.Done(); w.read() }()
		go func() { defer k.wg.Done(); w.write() }()
	}
	l.must(l.ip(rns,
		"link set "+port+" txqueuelen 1000 up",
		fmt.Sprintf("route add %s/32 dev %s", addr, port),
	))
	l.must(l.ip(ns,
		fmt.Sprintf("addr add %s/%d dev %s", addr, bits, ifname),
		"link set "+ifname+" txqueuelen 1000 up",
	))
	return k
}

// fail records the first error and ends the forwarder's direction, unless
// the link is closing (then reads and writes fail on purpose).
func (w *wanDir) fail(err error) {
	select {
	case <-w.done:
		return
	default:
	}
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

// read pushes every packet read from the source device into the pipe and
// wakes the writer when the packet is due before the writer would look.
func (w *wanDir) read() {
	buf := make([]byte, 2048)
	for {
		n, err := w.from.Read(buf)
		if err != nil {
			w.fail(err)
			return
		}
		now := time.Now()
		w.mu.Lock()
		w.pipe.Push(now, buf[:n])
		next, ok := w.pipe.Next()
		if ok && next.Before(w.sleepUntil) {
			w.sleepUntil = next
			w.armLocked(next.Sub(now))
		}
		if k := len(w.free); k > 0 {
			buf, w.free = w.free[k-1][:cap(w.free[k-1])], w.free[:k-1]
		} else {
			buf = make([]byte, 2048)
		}
		w.mu.Unlock()
	}
}

// armLocked sets the writer's timer to fire after d (at least 1 ns: zero
// would disarm it).
func (w *wanDir) armLocked(d time.Duration) {
	ts := unix.NsecToTimespec(int64(max(d, 1)))
	unix.TimerfdSettime(w.tfd, 0, &unix.ItimerSpec{Value: ts}, nil)
}

// write sends every packet when it is due and sleeps until the next one
// is, or until read pushes one due sooner (read then re-arms the timer).
func (w *wanDir) write() {
	var batch [][]byte
	var tick [8]byte
	for {
		w.mu.Lock()
		now := time.Now()
		for len(batch) < 64 {
			b := w.pipe.Pop(now)
			if b == nil {
				break
			}
			batch = append(batch, b)
		}
		next, ok := w.pipe.Next()
		switch {
		case len(batch) > 0:
			w.sleepUntil = now // more may be due; the writer looks again at once
		case ok:
			w.sleepUntil = next
			w.armLocked(next.Sub(now))
		default:
			w.sleepUntil = now.Add(time.Hour)
		}
		w.mu.Unlock()
		for _, b := range batch {
			if _, err := w.to.Write(b); err != nil && !errors.Is(err, unix.EIO) {
				// EIO: the device is not up yet or went down; the
				// packet is lost, as on a real link.
				w.fail(err)
				return
			}
		}
		if len(batch) > 0 {
			w.mu.Lock()
			for _, b := range batch {
				if len(w.free) < 4096 && cap(b) >= 2048 {
					w.free = append(w.free, b)
				}
			}
			w.mu.Unlock()
			clear(batch)
			batch = batch[:0]
			continue
		}
		if _, err := w.timer.Read(tick[:]); err != nil {
			w.fail(err)
			return
		}
	}
}
