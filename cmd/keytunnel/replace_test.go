package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// named serves "NAME\n" to each connection, so that a test can tell which
// of two services behind one key a forward reached.
func named(t *testing.T, name string) string {
	return proctest.Serve(t, func(c net.Conn) { c.Write([]byte(name + "\n")) })
}

// reach dials addr (a forward's port) until the service behind it answers
// want, and returns how long that took; it fails the test after d.
func reach(t *testing.T, addr, want string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < d {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.TrimSpace(line) == want {
				return time.Since(start)
			}
			last = strings.TrimSpace(line)
			if err != nil {
				last += " (" + err.Error() + ")"
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no answer %q through %s within %v (last: %q)", want, addr, d, last)
	return 0
}

// TestExposeReplace drives the issue #14 case with processes on a
// testnet: a second `expose PORT` of a running one (the same saved key)
// refuses with one line and exit status 1, and the first keeps serving.
// `expose --replace` with that key takes it over: new clients reach it,
// and the first says that it was replaced and stays up. When the
// replacing process exits (unannouncing the key), the first announces
// again at once and a forward reaches it within seconds, not the ~5
// minutes of its periodic re-announce. Finally a restart after the first
// is killed (its record left behind) is not blocked by the stale record.
func TestExposeReplace(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	env := proctest.Env(t, bs) // one HOME: expose PORT reuses the key saved for PORT
	a, b := named(t, "A"), named(t, "B")

	first := proctest.Start(t, env, "--json", "expose", a)
	ev := proctest.JSON(t, first.Line(`"event":"listening"`, 60*time.Second))
	pub, keyFile := ev["public_key"].(string), ev["key_file"].(string)
	fw, addr := proctest.Forward(t, bs, pub)
	reach(t, addr, "A", 30*time.Second)

	start := time.Now()
	second := proctest.Start(t, env, "expose", a)
	if code := second.Wait(60 * time.Second); code != 1 {
		t.Fatalf("second expose of the same key: exit %d, want 1", code)
	}
	want := "keytunnel: " + pub + " is already served by another running process (a keytunnel expose or up with this key, here or elsewhere); stop that one, or pass --replace to take the key over\n"
	if got := second.Err.String(); got != want || second.Out.String() != "" {
		t.Fatalf("second expose: stdout %q\nstderr %q\nwant   %q", second.Out.String(), got, want)
	}
	t.Logf("second expose refused after %v", time.Since(start))
	reach(t, addr, "A", 10*time.Second)

	third := proctest.Start(t, env, "--json", "expose", "--replace", "--key", keyFile, b)
	if ev := proctest.JSON(t, third.Line(`"event":"listening"`, 60*time.Second)); ev["public_key"] != pub {
		t.Fatalf("--replace announced %v, want %s", ev["public_key"], pub)
	}
	first.ErrLine("another process took over "+pub, 30*time.Second)
	// The second's probe only half-dialed: it was no peer of the first,
	// and got no connection to its target (stop 19's log showed both).
	if n := first.Err.Count(`"remote":"` + pub + `"`); n != 0 {
		t.Fatalf("the first took the second's probe for a peer (%d log lines):\n%s", n, first.Err)
	}
	// The forward's session to the first is still up; a new forward
	// dials afresh and reaches the process that took over.
	_, addr2 := proctest.Forward(t, bs, pub)
	reach(t, addr2, "B", 30*time.Second)

	third.Stop()
	if code := third.Wait(time.Second); code != 0 {
		t.Fatalf("--replace expose: exit %d", code)
	}
	stopped := time.Now()
	first.ErrLine("serving "+pub+" again", 30*time.Second)
	t.Logf("first announced again %v after the replacing process exited", time.Since(stopped))
	_, addr3 := proctest.Forward(t, bs, pub)
	reach(t, addr3, "A", 30*time.Second)
	t.Logf("a new forward reached the first %v after the replacing process exited", time.Since(stopped))
	reach(t, addr, "A", 30*time.Second) // the first forward redials to it too

	// Killed, the first leaves its record on the DHT nodes; a restart
	// finds nobody answering behind it and starts.
	first.Cmd.Process.Signal(syscall.SIGKILL)
	first.Wait(5 * time.Second)
	start = time.Now()
	restarted := proctest.Start(t, env, "--json", "expose", a)
	if ev := proctest.JSON(t, restarted.Line(`"event":"listening"`, 60*time.Second)); ev["public_key"] != pub {
		t.Fatalf("restart announced %v, want %s", ev["public_key"], pub)
	}
	t.Logf("restart over a stale record announced after %v", time.Since(start))
	// The first forward's session to the killed process looks open (its
	// peer vanished without a word); a new connection must not hang on it.
	t.Logf("the first forward reached the restarted process in %v", reach(t, addr, "A", 30*time.Second))
	fw.Stop()
}

// An expose --replace with no plain attempt before it still tells the
// running process at once: its probe is the handshake from the key's own
// owner that the running process watches for, so that one says it was
// taken over within seconds rather than at its next re-announce check,
// up to five minutes later. The one taking over says so too.
func TestExposeReplaceTellsHolder(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	keyFile, kp := proctest.WriteSeed(t, "svc.key")
	pub := kp.Public.String()
	first, _ := proctest.Expose(t, bs, named(t, "A"), "--key", keyFile)
	start := time.Now()
	second, _ := proctest.Expose(t, bs, named(t, "B"), "--replace", "--key", keyFile)
	second.ErrLine("took over "+pub+" from another running process", 10*time.Second)
	t.Logf("--replace announced after %v", time.Since(start))
	first.ErrLine("another process took over "+pub, 30*time.Second)
	t.Logf("the first said it was taken over %v after --replace started", time.Since(start))
	_, addr := proctest.Forward(t, bs, pub)
	reach(t, addr, "B", 30*time.Second)
}

// TestUpReplace: an up entry whose key a running expose serves does not
// start (up fails naming the entry and the setting that would), and with
// replace = true it takes the key over.
func TestUpReplace(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	keyFile, kp := proctest.WriteSeed(t, "svc.key")
	pub := kp.Public.String()
	ex, _ := proctest.Expose(t, bs, named(t, "A"), "--key", keyFile)
	dir := t.TempDir()
	write := func(replace bool) string {
		cfg := filepath.Join(dir, fmt.Sprintf("replace-%v.toml", replace))
		toml := fmt.Sprintf("[[expose]]\nname = \"web\"\naddress = %q\nkey = %q\nreplace = %v\n", named(t, "B"), keyFile, replace)
		if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	up := proctest.Start(t, proctest.Env(t, bs), "up", "-c", write(false))
	if code := up.Wait(60 * time.Second); code != 1 {
		t.Fatalf("up over a served key: exit %d, want 1", code)
	}
	want := "keytunnel: expose \"web\": " + pub + " is already served by another running process (a keytunnel expose or up with this key, here or elsewhere); stop that one, or set replace = true in this entry to take the key over\n"
	if got := up.Err.String(); got != want {
		t.Fatalf("up over a served key: stderr %q\nwant %q", got, want)
	}
	up = proctest.Start(t, proctest.Env(t, bs), "--json", "up", "-c", write(true))
	up.Line(`"event":"listening"`, 60*time.Second)
	ex.ErrLine("another process took over "+pub, 30*time.Second)
	_, addr := proctest.Forward(t, bs, pub)
	reach(t, addr, "B", 30*time.Second)
}

// TestExposeReplaceThroughRelay: through a dht-relay (no half-dial in
// its protocol, so the check dials as the key itself), an expose of a
// key that a running expose serves refuses with the same line.
func TestExposeReplaceThroughRelay(t *testing.T) {
	bs := proctest.Testnet(t, 3)
	keyFile, kp := proctest.WriteSeed(t, "svc.key")
	pub := kp.Public.String()
	proctest.Expose(t, bs, named(t, "A"), "--key", keyFile)
	port := proctest.FreeTCP(t)
	dr := proctest.Start(t, proctest.Env(t, bs), "--json", "dht-relay", "--host", "127.0.0.1", "--port", strconv.Itoa(port))
	url := proctest.JSON(t, dr.Line(`"event":"dht-relay"`, 60*time.Second))["address"].(string)
	second := proctest.Start(t, proctest.Env(t, bs), "--relay", url, "expose", "--key", keyFile, named(t, "B"))
	if code := second.Wait(60 * time.Second); code != 1 {
		t.Fatalf("expose through the relay of a served key: exit %d, want 1", code)
	}
	want := "keytunnel: " + pub + " is already served by another running process (a keytunnel expose or up with this key, here or elsewhere); stop that one, or pass --replace to take the key over\n"
	if got := second.Err.String(); got != want {
		t.Fatalf("stderr %q\nwant   %q", got, want)
	}
}
