//go:build !unix

package app

// alive says a process may exist where there is no cheap way to ask (no
// signal 0): status then removes a control socket only when connecting
// to it is refused, never on a guess.
func alive(pid int) bool { return true }
