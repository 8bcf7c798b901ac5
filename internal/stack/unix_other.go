//go:build !linux

package stack

import "syscall"

// unixControl: only Linux takes a socket file's mode from the socket, so
// elsewhere ListenUnix's Chmod after bind restricts it.
func unixControl(network, address string, c syscall.RawConn) error { return nil }
