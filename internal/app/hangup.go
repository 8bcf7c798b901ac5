package app

import (
	"os"
	"os/signal"
	"syscall"
)

// ignoreHangup keeps SIGHUP from killing the long-running commands that
// have nothing to reload (expose, forward, node, relay, testnet,
// dht-relay): a `kill -HUP` sent out of habit (or by a service manager's
// reload, or a closed terminal) must not drop every tunnel or take a DHT
// node off the network. Each one is logged so the
// sender learns what happened. The returned func restores the default.
func (e *Env) ignoreHangup(cmd string) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-ch:
				e.logger.Warn("SIGHUP ignored: " + cmd + " has nothing to reload (keytunnel up reloads its file on SIGHUP); stop it with Ctrl-C or SIGTERM")
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		<-exited
	}
}
