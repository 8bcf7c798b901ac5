package natlab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps named network namespaces.
const netnsDir = "/run/netns"

// prefix starts the name of every namespace natlab creates. The full name is
// kt-<pid>-<lab>-<role>, so parallel test binaries never collide and a later
// run can tell which namespaces belong to a process that no longer exists.
const prefix = "kt-"

var staleName = regexp.MustCompile(`^kt-([0-9]+)-`)

// inNetns runs fn on a locked OS thread that has joined the named network
// namespace, then moves the thread back. Sockets created by fn stay in the
// namespace for their whole life and can be used from any goroutine; a child
// process forked by fn (os/exec) is born in the namespace. fn must not rely on
// goroutines it starts running in the namespace: they run on other threads.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("natlab: open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join(netnsDir, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("natlab: open netns %s: %w", name, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("natlab: setns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime destroys a thread whose
			// goroutine exits while locked, so the namespace cannot leak
			// into unrelated goroutines.
			errc <- fmt.Errorf("natlab: restore netns after %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// run runs a command in the root namespace (used for `ip -n`, which enters
// the namespace itself) and returns its combined output in the error.
func run(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// runIn runs a command whose process is born inside namespace ns (forked from
// a thread that joined it). Cheaper than `ip netns exec`, which also sets up
// a mount namespace.
func runIn(ns, stdin, name string, args ...string) (string, error) {
	var out string
	err := inNetns(ns, func() error {
		var err error
		out, err = run(stdin, name, args...)
		return err
	})
	return out, err
}

// writeSysctl writes a value under /proc/sys/net inside namespace ns.
func writeSysctl(ns string, kv ...string) error {
	return inNetns(ns, func() error {
		for i := 0; i+1 < len(kv); i += 2 {
			p := "/proc/sys/net/" + strings.ReplaceAll(kv[i], ".", "/")
			if err := os.WriteFile(p, []byte(kv[i+1]), 0); err != nil {
				return fmt.Errorf("natlab: sysctl net.%s=%s in %s: %w", kv[i], kv[i+1], ns, err)
			}
		}
		return nil
	})
}

// netnsPids lists the processes whose (main thread's) network namespace is
// the named one, never including this process.
func netnsPids(name string) []int {
	out, err := run("", "ip", "netns", "pids", name)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// deleteNetns kills every process left inside the namespace (they can only
// have been started there by a lab) and removes it.
func deleteNetns(name string) error {
	pids := netnsPids(name)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(pids) > 0 {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && len(netnsPids(name)) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := run("", "ip", "netns", "del", name); err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// Namespaces lists the network namespaces whose name starts with natlab's
// prefix (kt-), from any process.
func Namespaces() []string {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// OwnNamespaces lists the namespaces this test process created and has not
// deleted yet.
func OwnNamespaces() []string {
	own := fmt.Sprintf("%s%d-", prefix, os.Getpid())
	var names []string
	for _, n := range Namespaces() {
		if strings.HasPrefix(n, own) {
			names = append(names, n)
		}
	}
	return names
}

// sweep removes namespaces left behind by natlab processes that no longer
// exist (a crashed or killed test binary).
func sweep() []string {
	var removed []string
	for _, n := range Namespaces() {
		m := staleName.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // owner still running
		}
		if deleteNetns(n) == nil {
			removed = append(removed, n)
		}
	}
	return removed
}
