package udx

import "sync"

// Packet-sized buffers shared by the send ring, the out-of-order store and
// the read queue, so a steady transfer allocates almost nothing.
const pktBufSize = 2048

var pktPool = sync.Pool{New: func() any { b := make([]byte, pktBufSize); return &b }}

func getPktBuf() []byte { return (*pktPool.Get().(*[]byte))[:pktBufSize] }

func putPktBuf(b []byte) {
	if cap(b) != pktBufSize {
		return
	}
	b = b[:pktBufSize]
	pktPool.Put(&b)
}
