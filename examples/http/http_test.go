package http_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/proctest"
)

// The README's recipe on a loopback testnet: an HTTP service exposed with
// `keytunnel expose`, reached through `keytunnel forward` with net/http
// (keep-alive and parallel requests, a 4 MiB upload) and with curl.

func TestMain(m *testing.M) { proctest.Main(m) }

func TestHTTPThroughForward(t *testing.T) {
	bs := proctest.Testnet(t, 4)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s, from behind a key\n", r.PathValue("name"))
	})
	mux.HandleFunc("POST /count", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%d bytes\n", n)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	_, pub := proctest.Expose(t, bs, ln.Addr().String())
	_, local := proctest.Forward(t, bs, pub)
	base := "http://" + local

	client := &http.Client{Timeout: 60 * time.Second}
	get := func(path string) string {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s %q", path, resp.Status, b)
		}
		return string(b)
	}
	if got := get("/hello/go"); got != "hello go, from behind a key\n" {
		t.Fatalf("GET: %q", got)
	}
	// Parallel requests, each on its own or a reused connection.
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			want := fmt.Sprintf("hello %d, from behind a key\n", i)
			resp, err := client.Get(fmt.Sprintf("%s/hello/%d", base, i))
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && string(b) != want {
				err = fmt.Errorf("got %q, want %q", b, want)
			}
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	resp, err := client.Post(base+"/count", "application/octet-stream", strings.NewReader(strings.Repeat("x", 4<<20)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != fmt.Sprintf("%d bytes\n", 4<<20) {
		t.Fatalf("POST: %q", b)
	}

	curl := proctest.Tool(t, "curl", "apt-get install curl")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, "-sS", "--max-time", "30", base+"/hello/curl").CombinedOutput()
	if err != nil || string(out) != "hello curl, from behind a key\n" {
		t.Fatalf("curl: %v: %q", err, out)
	}
}
