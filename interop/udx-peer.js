// Node side of keytunnel's udx interop tests (udx/interop_test.go).
//
// Usage: node udx-peer.js --mode transfer|destroy-go|destroy-node
//          --open go|node --size N [--host 127.0.0.1] [--id ID]
//
// Binds a udx-native socket on --host and creates a stream with id --id
// (random when absent), then prints
//   ready PORT ID
// and reads one line from stdin:
//   peer PORT ID
// with the Go side's port and stream id, and answers "peered". With --open node this side
// connects at once and sends first; with --open go it waits for the Go
// side's first packet and connects from the firewall hook (hyperdht's
// passive open).
//
// transfer: writes --size random bytes (respecting backpressure) while
//   reading, sends three MESSAGE datagrams "node-msg-K", ends its side, and
//   prints
//     msg TEXT            for each MESSAGE received
//     sent SHA256         when everything is written
//     end N SHA256        at the peer's END (bytes received and their hash)
//     close ERRCODE|ok    when the stream closes
// destroy-go: waits for the Go side to send data and destroy; prints
//     data N, then close ECONNRESET (or whatever error arrives)
// destroy-node: writes "bye", waits for one data chunk from Go, then
//   destroys the stream (DESTROY on the wire) and prints destroyed.
const crypto = require('crypto')
const readline = require('readline')
const minimist = require('minimist')
const UDX = require('udx-native')

const argv = minimist(process.argv.slice(2), { string: ['mode', 'open', 'host'] })
const mode = argv.mode || 'transfer'
const host = argv.host || '127.0.0.1'
const size = Number(argv.size || 0)
const id = argv.id !== undefined ? Number(argv.id) : crypto.randomBytes(4).readUInt32LE(0)

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, host)

let peer = null
const stream = udx.createStream(id, {
  firewall (sock, port, h) {
    if (!peer || port !== peer.port) return true
    if (!stream.connected) stream.connect(sock, peer.id, peer.port, h)
    return false
  }
})

console.log('ready ' + socket.address().port + ' ' + id)

const rl = readline.createInterface({ input: process.stdin })
rl.once('line', (line) => {
  const [cmd, port, pid] = line.trim().split(' ')
  if (cmd !== 'peer') throw new Error('bad line ' + line)
  peer = { port: Number(port), id: Number(pid) }
  console.log('peered')
  if (argv.open === 'node' || mode !== 'transfer') stream.connect(socket, peer.id, peer.port, host)
  if (argv.open === 'node' || stream.connected) run()
  else stream.once('connect', run)
})

stream.on('message', (buf) => console.log('msg ' + buf.toString()))
stream.on('error', (err) => console.log('error ' + (err.code || err.message)))
stream.on('close', () => {
  console.log('close')
  socket.close()
  setTimeout(() => process.exit(0), 100)
})

let started = false
function run () {
  if (started) return
  started = true
  if (mode === 'transfer') transfer()
  else if (mode === 'destroy-go') {
    let n = 0
    stream.on('data', (d) => { n += d.length; console.log('data ' + n) })
  } else if (mode === 'destroy-node') {
    stream.write(Buffer.from('bye'))
    stream.once('data', () => {
      stream.destroy()
      console.log('destroyed')
    })
  }
}

function transfer () {
  const rh = crypto.createHash('sha256')
  let rn = 0
  stream.on('data', (d) => { rh.update(d); rn += d.length })
  stream.on('end', () => {
    console.log('end ' + rn + ' ' + rh.digest('hex'))
    console.error('node sender packets=' + stream.packetsTransmitted + ' retransmits=' + stream.retransmits +
      ' rto=' + stream.rtoCount + ' fastrec=' + stream.fastRecoveries)
  })

  for (let k = 0; k < 3; k++) stream.trySend(Buffer.from('node-msg-' + k))

  const wh = crypto.createHash('sha256')
  let left = size
  const write = () => {
    while (left > 0) {
      const chunk = crypto.randomBytes(Math.min(left, 65536))
      wh.update(chunk)
      left -= chunk.length
      if (!stream.write(chunk)) return stream.once('drain', write)
    }
    console.log('sent ' + wh.digest('hex'))
    stream.end()
  }
  write()
}
