// Node→Node single-stream throughput baseline for udx/bench_test.go.
//
// Usage: node udx-bench.js --size N
// Two udx-native sockets on 127.0.0.1 in this process; one stream sends N
// bytes to the other. Prints:
//   bench BYTES SECONDS CPU_SECONDS
const minimist = require('minimist')
const UDX = require('udx-native')

const argv = minimist(process.argv.slice(2))
const size = Number(argv.size || 256 * 1024 * 1024)

const udx = new UDX()
const a = udx.createSocket()
const b = udx.createSocket()
a.bind(0, '127.0.0.1')
b.bind(0, '127.0.0.1')
const sa = udx.createStream(1)
const sb = udx.createStream(2)
sa.connect(a, 2, b.address().port, '127.0.0.1')
sb.connect(b, 1, a.address().port, '127.0.0.1')

const chunk = Buffer.alloc(65536, 7)
const cpu0 = process.cpuUsage()
const t0 = process.hrtime.bigint()
let got = 0
sb.on('data', (d) => { got += d.length })
sb.on('end', () => {
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  const c = process.cpuUsage(cpu0)
  console.log('bench ' + got + ' ' + secs + ' ' + (c.user + c.system) / 1e6)
  console.error('sender packets=' + sa.packetsTransmitted + ' retransmits=' + sa.retransmits + ' rto=' + sa.rtoCount + ' fastrec=' + sa.fastRecoveries)
  sb.end()
})
sb.on('close', () => { a.close(); b.close() })
let left = size
function write () {
  while (left > 0) {
    const n = Math.min(left, chunk.length)
    left -= n
    if (!sa.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return sa.once('drain', write)
  }
  sa.end()
}
write()
