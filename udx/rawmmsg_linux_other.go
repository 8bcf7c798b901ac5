//go:build linux && !(amd64 || arm64 || riscv64 || ppc64le || loong64 || s390x || mips64 || mips64le || ppc64)

package udx

import "net"

// newRawBatchIO: struct mmsghdr is laid out for 64-bit Linux only; other
// architectures use golang.org/x/net's batches, without offloads.
func newRawBatchIO(*net.UDPConn, bool, bool, bool) batchIO { return nil }
