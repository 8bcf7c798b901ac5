package keytunnel_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/keytunnel/keytunnel"
)

// quiet keeps the examples' output to what they print.
var quiet = slog.New(slog.DiscardHandler)

// One program listens on its key, another dials that key: the connection
// is found through the DHT, hole-punched and encrypted end to end. Here both
// nodes run on an in-process testnet; leave Config.Bootstrap nil to use the
// public network.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn, err := keytunnel.Testnet(ctx, 3)
	if err != nil {
		log.Fatal(err)
	}
	defer tn.Close()

	cfg := tn.Config()
	cfg.Logger = quiet
	server, err := keytunnel.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	ln, err := server.Listen()
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c) // echo
			}()
		}
	}()

	client, err := keytunnel.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	c, err := client.Dial(ctx, server.PublicKey())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, "hello over keytunnel")
	line := make([]byte, 21)
	if _, err := io.ReadFull(c, line); err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(line))
	// Output: hello over keytunnel
}

// Each accepted connection names the peer that opened it; Allow turns
// every other key away during the handshake.
func ExampleNode_Listen() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn, err := keytunnel.Testnet(ctx, 3)
	if err != nil {
		log.Fatal(err)
	}
	defer tn.Close()
	cfg := tn.Config()
	cfg.Logger = quiet

	friendCfg := cfg
	friendCfg.Seed = []byte(strings.Repeat("f", 32)) // a fixed key
	friend, err := keytunnel.New(friendCfg)
	if err != nil {
		log.Fatal(err)
	}
	defer friend.Close()
	stranger, err := keytunnel.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer stranger.Close()

	server, err := keytunnel.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	ln, err := server.Listen(keytunnel.Allow(friend.PublicKey()))
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peer := c.(*keytunnel.Conn).RemotePublicKey()
			fmt.Fprintf(c, "hello %s…\n", peer[:8])
			c.Close()
		}
	}()

	c, err := friend.Dial(ctx, server.PublicKey())
	if err != nil {
		log.Fatal(err)
	}
	greeting, _ := io.ReadAll(c)
	c.Close()
	fmt.Print(string(greeting))
	fmt.Println("friend is", friend.PublicKey()[:8])

	_, err = stranger.Dial(ctx, server.PublicKey())
	fmt.Println("stranger refused:", err != nil)
	// Output:
	// hello 34b4d904…
	// friend is 34b4d904
	// stranger refused: true
}

// Expose serves a local TCP service under the node's key, and Forward
// makes a key reachable on a local port, as the keytunnel command's
// expose and forward do (and interoperate with them).
func ExampleNode_Expose() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn, err := keytunnel.Testnet(ctx, 3)
	if err != nil {
		log.Fatal(err)
	}
	defer tn.Close()
	cfg := tn.Config()
	cfg.Logger = quiet

	// A TCP service to expose: it greets and hangs up.
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from the service\n")
			c.Close()
		}
	}()

	server, err := keytunnel.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	go server.Expose(ctx, svc.Addr().String())

	client, err := keytunnel.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	local := freePort()
	go client.Forward(ctx, server.PublicKey(), local)

	// Until the announce is done and the port is open, retry.
	for {
		c, err := net.Dial("tcp", local)
		if err == nil {
			b, _ := io.ReadAll(c)
			c.Close()
			if len(b) > 0 {
				fmt.Print(string(b))
				break
			}
		}
		if ctx.Err() != nil {
			log.Fatal("the forward never reached the service")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Output: hello from the service
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
