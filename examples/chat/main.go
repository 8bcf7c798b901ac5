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
	"os"
	"os/signal"
	"sync"

	"github.com/keytunnel/keytunnel/dht"
	"github.com/keytunnel/keytunnel/internal/key"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

// run is the whole program; tests drive it with pipes.
func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	conn, err := dht.ListenUDP(0)
	if err != nil {
		return err
	}
	node, err := dht.New(dht.Config{Conn: conn, Bootstrap: dht.BootstrapFromEnv()})
	if err != nil {
		conn.Close()
		return err
	}
	defer node.Close()
	if err := node.WaitReady(ctx); err != nil {
		return err
	}
	if len(args) > 0 {
		remote, err := key.ParsePublicKey(args[0])
		if err != nil {
			return err
		}
		c, err := node.Dial(ctx, remote, nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "connected %s\n", c.RemotePublicKey())
		go func() {
			<-ctx.Done()
			c.Close()
		}()
		go copyLines(c, stdin)
		io.Copy(stdout, c)
		return nil
	}
	kp, err := key.Generate(nil)
	if err != nil {
		return err
	}
	l, err := node.Listen(ctx, kp, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Fprintf(stdout, "key %s\n", kp.Public)
	// Every stdin line goes to every connected client.
	var mu sync.Mutex
	peers := map[*dht.Conn]bool{}
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
		c, err := l.AcceptConn(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Fprintf(stdout, "connection %s\n", c.RemotePublicKey())
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
