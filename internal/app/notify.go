package app

import "github.com/keytunnel/keytunnel/internal/sdnotify"

// notify logs a failure to reach the service manager (sdnotify), once:
// it changes nothing about the tunnels, but a Type=notify unit waiting
// for READY=1 will time out.
func (e *Env) notify(err error) {
	if err != nil {
		e.notifyOnce.Do(func() {
			e.logger.Warn("cannot notify the service manager; a Type=notify unit will not see this service ready", "err", err)
		})
	}
}

// ready tells the service manager that expose or forward is serving.
func (e *Env) ready(status string) { e.notify(sdnotify.Ready(status)) }
