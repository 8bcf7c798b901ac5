package stack

import "syscall"

// unixControl sets a new Unix socket's mode to 0600 before bind: Linux
// creates the socket's file with the socket inode's mode (less the
// umask), so the file never allows others to connect.
func unixControl(network, address string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) { err = syscall.Fchmod(int(fd), 0o600) }); cerr != nil {
		return cerr
	}
	return err
}
