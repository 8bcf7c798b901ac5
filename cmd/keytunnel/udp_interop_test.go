package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// UDP against holesail 2.4.1 (interop/holesail-udp.js runs its server and
// client under Node on the testnet): holesail frames each datagram with a
// 4-byte big-endian length on one hyperdht connection per client address,
// which is what forward --udp --raw speaks and expose --udp accepts from a
// raw peer.

// udpClients has n clients each resolve k names through addr.
func udpClients(t *testing.T, addr string, n, k int) {
	t.Helper()
	errs := make(chan error, n)
	for i := range n {
		c := proctest.DialUDP(t, addr)
		go func() {
			for j := range k {
				if _, err := resolve(c, uint16(i*k+j), fmt.Sprintf("n%d.c%d.example", j, i)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestE2EHolesailUDPServerBehindForwardRaw(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	svc := newDNSService(t)
	seed, pub := rawSeed(t)
	srv := nodetest.Start(t, "holesail-udp.js", "server", bs, seed, svc.port())
	if got := srv.Expect("holesail-udp-server ", 60*time.Second); got != pub.String() {
		t.Fatalf("holesail-server listens on %s, want %s", got, pub)
	}
	_, local := proctest.Forward(t, bs, pub.String(), "--udp", "--raw")
	udpClients(t, local, 5, 10)
	if n := svc.nSenders(); n != 5 {
		t.Errorf("the service saw %d sources, want one per client (5): holesail-server opens a socket per connection", n)
	}
}

func TestE2EHolesailUDPClientToExpose(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	svc := newDNSService(t)
	ex, pub := proctest.Expose(t, bs, svc.port(), "--udp")
	cli := nodetest.Start(t, "holesail-udp.js", "client", bs, pub, "0")
	local := cli.Expect("holesail-udp-client ", 60*time.Second)
	udpClients(t, local, 5, 10)
	connected := 0
	for _, l := range ex.Out.All() {
		if strings.Contains(l, `"event":"connected"`) {
			connected++
			if !strings.Contains(l, `"mode":"raw"`) {
				t.Errorf("expose took holesail's connection for mux: %s", l)
			}
		}
	}
	if connected != 5 {
		t.Errorf("expose saw %d raw connections, want one per client (5)", connected)
	}
}
