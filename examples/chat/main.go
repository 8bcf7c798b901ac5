// Command chat is the two-peer chat of the HyperDHT README in Go.
//
//	go run ./examples/chat        server: prints its public key (hex)
//	go run ./examples/chat KEY    client: connects to KEY
//
// Both sides send each stdin line to the connection and print what
// arrives. Bootstrap nodes come from KEYTUNNEL_BOOTSTRAP (host:port,
// comma-separated) when set, else the public HyperDHT nodes.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"

	"github.com/keytunnel/keytunnel"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

// run is the whole program; tests drive it with pipes. It uses only the
// keytunnel library, in raw mode: the chat's peers are plain hyperdht
// connections, as in the HyperDHT README, so it talks to the Node chat.
func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	// Problems only on stderr: stdout is the chat.
	cfg := keytunnel.Config{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if v, ok := os.LookupEnv("KEYTUNNEL_BOOTSTRAP"); ok {
		cfg.Bootstrap = []string{}
		for _, b := range strings.Split(v, ",") {
			if b = strings.TrimSpace(b); b != "" {
				cfg.Bootstrap = append(cfg.Bootstrap, b)
			}
		}
	}
	node, err := keytunnel.New(cfg)
	if err != nil {
		return err
	}
	defer node.Close()
	if len(args) > 0 {
		c, err := node.Dial(ctx, args[0], keytunnel.Raw())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "connected %s\n", c.(*keytunnel.Conn).RemotePublicKey())
		go func() {
			<-ctx.Done()
			c.Close()
		}()
		go copyLines(c, stdin)
		io.Copy(stdout, c)
		return nil
	}
	// Listen takes raw peers as they are: a client that says nothing
	// for a moment (the detection wait) is handed over all the same.
	l, err := node.Listen()
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Fprintf(stdout, "key %s\n", node.PublicKey())
	// Every stdin line goes to every connected client.
	var mu sync.Mutex
	peers := map[net.Conn]bool{}
	go func() {
		s := bufio.NewScanner(stdin)
		for s.Scan() {
			mu.Lock()
			for c := range peers {
				c.Write(append(s.Bytes(), '\n'))
			}
			mu.Unlock()
		}
	}()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Fprintf(stdout, "connection %s\n", c.(*keytunnel.Conn).RemotePublicKey())
		mu.Lock()
		peers[c] = true
		mu.Unlock()
		go func() {
			io.Copy(stdout, c)
			mu.Lock()
			delete(peers, c)
			mu.Unlock()
			c.Close()
		}()
	}
}

func copyLines(w io.Writer, r io.Reader) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		if _, err := w.Write(append(s.Bytes(), '\n')); err != nil {
			return
		}
	}
}
