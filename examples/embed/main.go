// Command embed is a program outside the keytunnel module that uses it as
// a library, importing only github.com/keytunnel/keytunnel: it listens on
// a key, echoing every connection, and checks its own Listen by dialing
// the key from a second node and echoing 1 MiB. It then keeps serving, so
// that `keytunnel forward KEY PORT` elsewhere reaches the same Listen.
//
//	go run . -bootstrap HOST:PORT   # a testnet's (keytunnel testnet)
//	go run .                        # starts an in-process testnet
//	go run . -public                # the public HyperDHT
//
// It prints "bootstrap ADDRS" (when it started the testnet), "listening
// KEY" and "echoed N bytes intact", one per line, and serves until stdin
// closes or it is interrupted.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/keytunnel/keytunnel"
)

func main() {
	bootstrap := flag.String("bootstrap", "", "DHT bootstrap nodes, comma-separated (default: an in-process testnet)")
	public := flag.Bool("public", false, "join the public HyperDHT")
	size := flag.Int("size", 1<<20, "bytes to echo through the self-check")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("embed: ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := keytunnel.Config{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	switch {
	case *public:
	case *bootstrap != "":
		cfg.Bootstrap = strings.Split(*bootstrap, ",")
	default:
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		tn, err := keytunnel.Testnet(tctx, 3)
		cancel()
		if err != nil {
			log.Fatal(err)
		}
		defer tn.Close()
		cfg.Bootstrap = tn.Bootstrap
		fmt.Println("bootstrap", strings.Join(tn.Bootstrap, ","))
	}
	if err := run(ctx, cfg, *size); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, cfg keytunnel.Config, size int) error {
	server, err := keytunnel.New(cfg)
	if err != nil {
		return err
	}
	defer server.Close()
	ln, err := server.Listen()
	if err != nil {
		return err
	}
	go serve(ln)
	fmt.Println("listening", server.PublicKey())

	client, err := keytunnel.New(cfg)
	if err != nil {
		return err
	}
	n, err := selfCheck(ctx, client, server.PublicKey(), size)
	client.Close()
	if err != nil {
		return fmt.Errorf("self-check: %w", err)
	}
	fmt.Println("echoed", n, "bytes intact")

	// Serve until stdin closes (the parent is gone) or a signal.
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	<-ctx.Done()
	return nil
}

// serve echoes every connection, logging who opened it.
func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			kc := c.(*keytunnel.Conn)
			fmt.Fprintln(os.Stderr, "connection from", kc.RemotePublicKey())
			io.Copy(c, c)
			kc.CloseWrite()
		}()
	}
}

// selfCheck dials key, sends size random bytes and checks the echo.
func selfCheck(ctx context.Context, n *keytunnel.Node, key string, size int) (int, error) {
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := n.Dial(dctx, key)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	msg := make([]byte, size)
	rand.Read(msg)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(*keytunnel.Conn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return 0, err
	}
	if err := <-errc; err != nil {
		return 0, err
	}
	if !bytes.Equal(got, msg) {
		return 0, errors.New("the echo differs from what was sent")
	}
	return len(got), nil
}
