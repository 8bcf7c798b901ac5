package rpc

// congestion is the reference's CongestionWindow: four slots rotated on
// every drain (750 ms). A send counts in the current slot; a reply or a
// destroyed request takes one back from it.
type congestion struct {
	i      int
	total  int
	window [4]int
	max    int
}

func (c *congestion) full() bool {
	return c.total >= 2*c.max || c.window[c.i] >= c.max
}

func (c *congestion) send() {
	c.total++
	c.window[c.i]++
}

func (c *congestion) recv() {
	if c.window[c.i] > 0 {
		c.window[c.i]--
		c.total--
	}
}

func (c *congestion) drain() {
	c.i = (c.i + 1) & 3
	c.total -= c.window[c.i]
	c.window[c.i] = 0
}
