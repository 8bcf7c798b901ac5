package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/key"
	"github.com/keytunnel/keytunnel/internal/nodetest"
	"github.com/keytunnel/keytunnel/internal/proctest"
)

// Raw mode against hypertele 1.1.4, which speaks plain hyperdht streams,
// one peer connection per TCP connection. Its --bootstrap option takes one
// port on 127.0.0.1: the testnet's first node. holesail is in
// holesail_interop_test.go.

// rawSeed is a seed whose hex starts with a letter, so that minimist
// (hypertele's option parser) keeps it a string.
func rawSeed(t *testing.T) (string, key.PublicKey) {
	t.Helper()
	var seed key.Seed
	rand.Read(seed[:])
	seed[0] = 0xab
	return hex.EncodeToString(seed[:]), key.FromSeed(seed).Public
}

// echoThrough sends n random bytes through addr to an echo service, on
// conns parallel connections, and checks every echo's digest. Each client
// reads the whole echo before it closes: hypertele destroys both sides as
// soon as either closes, dropping what it still had queued, so an echo
// service that closes right after its last write loses its tail there.
func echoThrough(t *testing.T, addr string, conns, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoDigest(addr, n, i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func echoDigest(addr string, n, i int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	data := make([]byte, n)
	rand.Read(data)
	want := sha256.Sum256(data)
	go c.Write(data)
	h := sha256.New()
	got, err := io.Copy(h, io.LimitReader(c, int64(n)))
	if err != nil {
		return fmt.Errorf("conn %d: after %d bytes: %v", i, got, err)
	}
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("conn %d: %d of %d bytes echoed, digest equal: %v", i, got, n, bytes.Equal(h.Sum(nil), want[:]))
	}
	return nil
}

func TestE2EHyperteleServerBehindForwardRaw(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	echo := proctest.Echo(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	seed, pub := rawSeed(t)
	srv := nodetest.Start(t, "node_modules/hypertele/server.js",
		"-l", echoPort, "--seed", seed, "--bootstrap", proctest.FirstPort(t, bs))
	if got := srv.Expect("hypertele:", 60*time.Second); got != pub.String() {
		t.Fatalf("hypertele-server listens on %s, want %s", got, pub)
	}
	_, local := proctest.Forward(t, bs, pub.String(), "--raw")
	echoThrough(t, local, 1, 1<<20)
	echoThrough(t, local, 8, 256<<10)
}

func TestE2EHyperteleClientToExpose(t *testing.T) {
	nodetest.Require(t)
	bs := proctest.Testnet(t, 4)
	echo := proctest.Echo(t)
	ex, pub := proctest.Expose(t, bs, echo)
	cli := nodetest.Start(t, "node_modules/hypertele/client.js",
		"-p", "0", "-s", pub, "--bootstrap", proctest.FirstPort(t, bs))
	local := cli.Expect("Server ready @", 60*time.Second)
	echoThrough(t, local, 1, 1<<20)
	echoThrough(t, local, 8, 256<<10)
	connected := 0
	for _, l := range ex.Out.All() {
		if strings.Contains(l, `"event":"connected"`) {
			connected++
			if !strings.Contains(l, `"mode":"raw"`) {
				t.Fatalf("expose took hypertele's connection for mux: %s", l)
			}
		}
	}
	if connected != 9 {
		t.Fatalf("expose saw %d raw connections, want 9", connected)
	}
}
