package nodetest

import (
	"context"
	"testing"
	"time"
)

func TestEcho(t *testing.T) {
	p := Start(t, "echo.js")
	p.Expect("ready", 30*time.Second)
	if _, err := p.Stdin().Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if got := p.Expect("echo ", 10*time.Second); got != "hello" {
		t.Fatalf("echo = %q, want hello", got)
	}
	p.Stdin().Write([]byte("again\n"))
	if got := p.ExpectAny(10*time.Second, "error ", "echo "); got != "echo again" {
		t.Fatalf("ExpectAny = %q, want the whole line %q", got, "echo again")
	}
	p.Stdin().Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("script exit: %v", err)
	}
}
