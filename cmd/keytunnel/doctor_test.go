package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/natlab"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// doctorRun runs `keytunnel [args] doctor [dargs]` on h within limit and
// returns its stdout, stderr, exit status and time.
func doctorRun(t *testing.T, bin string, env []string, h *natlab.Host, limit time.Duration, args ...string) (out, errs string, code int, took time.Duration) {
	t.Helper()
	cmd := h.Command(bin, args...)
	cmd.Env = env
	var eb bytes.Buffer
	cmd.Stderr = &eb
	start := time.Now()
	o, err := proctest.RunBounded(cmd, limit)
	took = time.Since(start)
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%v: %v\nstdout:\n%s\nstderr:\n%s", args, err, o, eb.String())
	}
	t.Logf("keytunnel %s (%v, exit %d):\n%s%s", strings.Join(args, " "), took.Round(10*time.Millisecond), code, o, eb.String())
	return string(o), eb.String(), code, took
}

// wantLines fails unless every pattern matches a line of out.
func wantLines(t *testing.T, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)` + p).MatchString(out) {
			t.Fatalf("no line matches %q in:\n%s", p, out)
		}
	}
}

// TestNATLabDoctor drives `keytunnel doctor` in a NAT lab: on a public
// host, behind a consistent and behind a randomizing NAT it reaches the
// bootstrap node, says UDP works and names the NAT kind the DHT sees;
// with UDP dropped on the host's link it ends within its bounds, exit 1,
// and says to use --relay; through a dht-relay it reaches a service
// anyway. With a KEY it finds the service, connects (holepunched between
// consistent NATs, through a blind relay between randomizing ones, and
// says so and why), and measures RTT and throughput; a key nobody
// announces fails with the advice to check the expose.
func TestNATLabDoctor(t *testing.T) {
	natlab.Require(t)
	bin := proctest.Binary(t)
	lab := natlab.New(t)
	boot := proctest.LabDHT(t, lab)
	env := proctest.Env(t, boot)

	for _, c := range []struct {
		name string
		net  *natlab.Net
		nat  string
	}{
		{"public", lab.Public(), `^nat: none: the DHT sees this host's own address 198\.18\.0\.\d+:\d+ \(\d+ of \d+ sampled nodes saw port \d+\)`},
		{"consistent", lab.NAT(natlab.Consistent), `^nat: consistent: the DHT sees this host at 198\.18\.1\.\d+:\d+ \(\d+ of \d+ sampled nodes saw port \d+\)`},
		{"random", lab.NAT(natlab.Random), `^nat: randomizing: the DHT sees this host at 198\.18\.1\.\d+ with a new port per peer \(\d+ sampled nodes saw \d+ ports`},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := lab.Host(c.net)
			out, _, code, _ := doctorRun(t, bin, env, h, 90*time.Second, "doctor")
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			wantLines(t, out, `^bootstrap: `+regexp.QuoteMeta(boot)+` answered in [0-9.]+[µm]?s, sees this host as `, `^udp: works \(1 of 1 bootstrap nodes answered\)`,
				`^dht: joined`, c.nat, `^doctor: all checks passed$`)
			if c.name != "consistent" {
				return
			}
			// --json: one doctor event per check, the same facts.
			out, _, code, _ = doctorRun(t, bin, env, h, 90*time.Second, "--json", "doctor")
			if code != 0 {
				t.Fatalf("--json: exit %d", code)
			}
			checks := map[string]bool{}
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				ev := proctest.JSON(t, l)
				check, _ := ev["check"].(string)
				msg, _ := ev["message"].(string)
				if ev["event"] != "doctor" || ev["ok"] != true || msg == "" {
					t.Fatalf("--json line %s", l)
				}
				checks[check] = true
				if check == "nat" && !strings.HasPrefix(msg, "consistent: ") {
					t.Fatalf("--json nat: %s", l)
				}
			}
			if !checks["bootstrap"] || !checks["udp"] || !checks["dht"] || !checks["nat"] {
				t.Fatalf("--json checks %v", checks)
			}
		})
	}

	// A service behind a consistent NAT, and a blind relay.
	e := lab.Host(lab.NAT(natlab.Consistent))
	svcPort, _ := sendingService(t, e, 1)
	_, pub := labExpose(t, bin, env, e, svcPort, "--json")
	r := lab.Host(lab.Public())
	relay := proctest.StartCmd(t, r.Command(bin, "--json", "relay"), env)
	relayKey, _ := proctest.JSON(t, relay.Line(`"event":"listening"`, 60*time.Second))["public_key"].(string)
	if len(relayKey) != 64 {
		t.Fatalf("relay: %q", relayKey)
	}

	t.Run("key-direct", func(t *testing.T) {
		h := lab.Host(lab.NAT(natlab.Consistent))
		out, _, code, _ := doctorRun(t, bin, env, h, 90*time.Second, "doctor", pub)
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		wantLines(t, out, `^peer: `+pub[:8]+`… is announced on [1-9]\d* DHT nodes`,
			`^connect: direct to 198\.18\.1\.\d+:\d+, holepunched \(this side consistent, (peer consistent|the peer's NAT not reported)\)`,
			`^rtt: [0-9.]+[µm]?s \(median of 5 pings through the tunnel`,
			`^throughput: [0-9.]+ MB/s up, [0-9.]+ MB/s down \(4 MiB each way\)`, `^doctor: all checks passed$`)
	})

	t.Run("key-relayed", func(t *testing.T) {
		e := lab.Host(lab.NAT(natlab.Random))
		svcPort, _ := sendingService(t, e, 1)
		_, rpub := labExpose(t, bin, env, e, svcPort, "--json", "--relay-through", relayKey)
		h := lab.Host(lab.NAT(natlab.Random))
		out, _, code, _ := doctorRun(t, bin, env, h, 120*time.Second, "--relay-through", relayKey, "doctor", rpub)
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		wantLines(t, out, `^nat: randomizing`,
			`^connect: relayed through blind relay `+relayKey[:8]+`… at 198\.18\.0\.\d+:\d+: both NATs randomize ports, which no holepunch gets through \(this side random, peer random\)`,
			`^rtt: `, `^throughput: [0-9.]+ MB/s up`, `^doctor: all checks passed$`)
	})

	t.Run("key-random-no-relay", func(t *testing.T) {
		e := lab.Host(lab.NAT(natlab.Random))
		svcPort, _ := sendingService(t, e, 1)
		_, rpub := labExpose(t, bin, env, e, svcPort, "--json")
		h := lab.Host(lab.NAT(natlab.Random))
		out, errs, code, took := doctorRun(t, bin, env, h, 120*time.Second, "doctor", rpub)
		if code != 1 || took > 60*time.Second {
			t.Fatalf("exit %d after %v, want 1 within 60 s", code, took)
		}
		wantLines(t, out, `^connect: cannot connect to `+rpub[:8]+`… after `)
		wantLines(t, errs, `^keytunnel: the path to `+rpub[:8]+`… failed: holepunching failed .*give both sides --relay-through KEY$`)
	})

	t.Run("key-not-announced", func(t *testing.T) {
		h := lab.Host(lab.NAT(natlab.Consistent))
		nobody := hex.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
		out, errs, code, took := doctorRun(t, bin, env, h, 90*time.Second, "doctor", nobody)
		if code != 1 || took > 60*time.Second {
			t.Fatalf("exit %d after %v, want 1 within 60 s", code, took)
		}
		wantLines(t, out, `^peer: 5a5a5a5a… is not announced on the DHT`)
		wantLines(t, errs, `^keytunnel: no DHT node holds an announce of 5a5a5a5a…: check that its expose runs`)
	})

	t.Run("udp-blocked", func(t *testing.T) {
		h := lab.Host(lab.NAT(natlab.Consistent))
		h.DropUDP()
		out, errs, code, took := doctorRun(t, bin, env, h, 60*time.Second, "doctor", pub)
		if code != 1 || took > 20*time.Second {
			t.Fatalf("exit %d after %v, want 1 within 20 s", code, took)
		}
		wantLines(t, out, `^bootstrap: `+regexp.QuoteMeta(boot)+`: no answer \(gave up after [0-9.]+s\)`,
			`^udp: no bootstrap node answered over UDP in [0-9.]+s: UDP is blocked on this network`, `^peer: not tested: no DHT`)
		if strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Fatalf("stderr is not one line:\n%s", errs)
		}
		wantLines(t, errs, `^keytunnel: UDP looks blocked here: use a dht-relay, keytunnel --relay tcp://HOST:49443`)

		// The advice works: through a dht-relay the same host reaches
		// the service.
		rh := lab.Host(lab.Public())
		dr := proctest.StartCmd(t, rh.Command(bin, "--json", "dht-relay", "--host", rh.Addr().String()), env)
		url, _ := proctest.JSON(t, dr.Line(`"event":"dht-relay"`, 60*time.Second))["address"].(string)
		out, _, code, _ = doctorRun(t, bin, env, h, 90*time.Second, "--relay", url, "doctor", pub)
		if code != 0 {
			t.Fatalf("through the dht-relay: exit %d", code)
		}
		wantLines(t, out, `^dht-relay: reached in `, `^connect: connected to `+pub[:8]+`… through the dht-relay`,
			`^throughput: [0-9.]+ MB/s up`, `^doctor: all checks passed$`)
	})
}
