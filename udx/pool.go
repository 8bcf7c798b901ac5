package udx

import "sync"

// Packet-sized buffers shared by the send ring, the out-of-order store and
// the read queue, so a steady transfer allocates almost nothing.
const pktBufSize = 2048

// The pool holds array pointers: putting a slice would allocate its header
// for every packet.
var pktPool = sync.Pool{New: func() any { return new([pktBufSize]byte) }}

func getPktBuf() []byte { return pktPool.Get().(*[pktBufSize]byte)[:] }

func putPktBuf(b []byte) {
	if cap(b) != pktBufSize {
		return
	}
	pktPool.Put((*[pktBufSize]byte)(b[:pktBufSize]))
}

// Written bytes wait for the loop in chunks of wqChunkSize, which a
// stream takes from wqPool and gives back once they are sent.
const wqChunkSize = 64 << 10

var wqPool = sync.Pool{New: func() any { return new([wqChunkSize]byte) }}
