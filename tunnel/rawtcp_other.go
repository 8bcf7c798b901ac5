//go:build !linux

package tunnel

// rawTCP is Linux only (rawtcp_linux.go); elsewhere pump uses net.Conn.
type rawTCP struct{}

func rawTCPOf(conn) *rawTCP { return nil }

func (*rawTCP) read([]byte) (int, error)  { panic("unreachable") }
func (*rawTCP) write([]byte) (int, error) { panic("unreachable") }
