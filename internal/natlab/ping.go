package natlab

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Ping sends count ICMP echo requests from h to dst, one after another,
// and returns the round-trip times of those answered within a second,
// sorted; it fails only when none is (a lossy link loses some). The far
// end's kernel answers, so no user-space scheduling there is in the
// measurement.
func (h *Host) Ping(dst netip.Addr, count int) ([]time.Duration, error) {
	var c *icmp.PacketConn
	if err := h.Run(func() (err error) {
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return nil, fmt.Errorf("natlab: ping from %v: %w", h.addr, err)
	}
	defer c.Close()
	var rtts []time.Duration
	buf := make([]byte, 1500)
	for seq := 1; seq <= count; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x6b74, Seq: seq, Data: []byte("natlab")}}
		b, _ := msg.Marshal(nil)
		start := time.Now()
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return nil, fmt.Errorf("natlab: ping %v: %w", dst, err)
		}
		c.SetReadDeadline(start.Add(time.Second))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				break // lost
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.Seq == seq {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
	}
	if len(rtts) == 0 {
		return nil, fmt.Errorf("natlab: ping %v from %v: none of %d echo requests answered", dst, h.addr, count)
	}
	slices.Sort(rtts)
	return rtts, nil
}
