// The two-peer chat of the HyperDHT README, as the Node side of the Go
// examples/chat interop test.
//
//   node chat.js          server: prints "key <hex>", then relays stdin lines
//                         to every client and prints what clients send
//   node chat.js KEY      client: connects to KEY and does the same
//
// Bootstrap nodes come from KEYTUNNEL_BOOTSTRAP (host:port,...), as for every
// keytunnel command. Unlike the README's chat this script refuses to run
// without it: tests must never reach the public network.
const DHT = require('hyperdht')
const readline = require('readline')

if (!process.env.KEYTUNNEL_BOOTSTRAP) {
  console.error('chat.js: set KEYTUNNEL_BOOTSTRAP (tests use a local testnet only)')
  process.exit(2)
}
const bootstrap = process.env.KEYTUNNEL_BOOTSTRAP.split(',').map((s) => s.trim()).filter(Boolean)
const node = new DHT({ bootstrap })
const lines = readline.createInterface({ input: process.stdin })
const peers = new Set()
lines.on('line', (l) => { for (const s of peers) s.write(l + '\n') })

function attach (socket) {
  peers.add(socket)
  socket.on('data', (d) => process.stdout.write(d))
  socket.on('error', (e) => console.error('connection error:', e.message))
  socket.on('close', () => peers.delete(socket))
}

if (process.argv[2]) {
  const socket = node.connect(Buffer.from(process.argv[2], 'hex'))
  socket.on('open', () => console.log('connected ' + socket.remotePublicKey.toString('hex')))
  attach(socket)
  socket.on('close', () => { node.destroy(); process.exit(0) })
} else {
  const server = node.createServer((socket) => {
    console.log('connection ' + socket.remotePublicKey.toString('hex'))
    attach(socket)
  })
  server.listen().then(() => console.log('key ' + server.publicKey.toString('hex')))
}
