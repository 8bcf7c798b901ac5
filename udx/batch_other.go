//go:build !linux

package udx

import (
	"errors"
	"net"
)

type batchIO interface {
	read(msgs []rxMsg) (int, error)
	write(msgs []txMsg)
}

func newBatchIO(*net.UDPConn, bool, bool, bool) batchIO { return nil }

func setSocketOptions(*net.UDPConn, bool) {}

func isClosedErr(err error) bool { return errors.Is(err, net.ErrClosed) }
