// One side of a udx-native stream between two processes, for the WAN
// benchmark (bench/wan_test.go): the Node reference's raw stream over an
// emulated link, beside Go udx's.
//
// Usage:
//   node udx-wan.js --role recv --port P --peer HOST:PORT
//   node udx-wan.js --role send --port P --peer HOST:PORT --size N
// Both bind 0.0.0.0:P; the sender's stream is 1, the receiver's 2. The
// receiver prints "ready" once bound and, when the sender ends,
//   bench BYTES SECONDS
// timed from its first data to the end.
const minimist = require('minimist')
const UDX = require('udx-native')

const argv = minimist(process.argv.slice(2), { string: ['peer'] })
const [peerHost, peerPort] = argv.peer.split(':')
const udx = new UDX()
const sock = udx.createSocket()
sock.bind(Number(argv.port), '0.0.0.0')
const send = argv.role === 'send'
const stream = udx.createStream(send ? 1 : 2)
stream.connect(sock, send ? 2 : 1, Number(peerPort), peerHost)

if (send) {
  const chunk = Buffer.alloc(65536, 7)
  let left = Number(argv.size)
  const write = () => {
    while (left > 0) {
      const n = Math.min(left, chunk.length)
      left -= n
      if (!stream.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return stream.once('drain', write)
    }
    stream.end()
  }
  write()
  stream.on('data', () => {})
  stream.on('end', () => { stream.end() })
  stream.on('close', () => sock.close())
} else {
  let t0 = 0n
  let got = 0
  stream.on('data', (d) => {
    if (got === 0) t0 = process.hrtime.bigint()
    got += d.length
  })
  stream.on('end', () => {
    console.log('bench ' + got + ' ' + Number(process.hrtime.bigint() - t0) / 1e9)
    stream.end()
  })
  stream.on('close', () => sock.close())
  console.log('ready')
}
