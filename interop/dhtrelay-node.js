// @hyperswarm/dht-relay 0.4.3 relay and relayed clients for relay/dhtrelay's
// interop tests, on a local testnet only (bootstrap list required).
//
//   node dhtrelay-node.js relay tcp|ws <bootstrap> [secret-hex,...]
//       a hyperdht node relayed with relay(dht, stream) on 127.0.0.1 over
//       the TCP (secret-stream) or WebSocket transport; prints
//       "listening <port>". With secrets (a seed, say) it keeps every
//       frame the relay receives and, on the stdin line
//       "report [secret-hex,...]", prints "frames <n> secret <frames
//       holding any of the secrets, those given and those on the line>"
//       (secrets of a connection are known only once it is made).
//   node dhtrelay-node.js dial <url> <pk> <bytes> [noncustodial]
//       a relayed client (url tcp://host:port or ws://host:port) connects
//       to pk, sends <bytes> random bytes, ends, reads the echo and prints
//       "result <sha256 sent> <sha256 received>" or "error <message>".
//   node dhtrelay-node.js listen <url> <seed-hex> [noncustodial]
//       a relayed client listens on the seed's key pair and echoes every
//       connection; prints "listening <pk>" and "connection <remote pk>".
const net = require('net')
const path = require('path')
const crypto = require('crypto')
const DHT = require('hyperdht')

const root = path.join(__dirname, 'node_modules', '@hyperswarm', 'dht-relay')
const RelayedNode = require('@hyperswarm/dht-relay')
const { relay } = require('@hyperswarm/dht-relay')
const TCPStream = require('@hyperswarm/dht-relay/tcp')
const WSStream = require('@hyperswarm/dht-relay/ws')
const ws = require(require.resolve('ws', { paths: [root] }))

const [mode, a1, a2, a3, a4] = process.argv.slice(2)

function connect (url) {
  const u = new URL(url)
  if (u.protocol === 'tcp:') {
    return new TCPStream(true, net.connect(Number(u.port), u.hostname))
  }
  return new WSStream(true, new ws.WebSocket(url))
}

async function runRelay () {
  const bootstrap = a2.split(',').filter(Boolean)
  if (!bootstrap.length) throw new Error('a local bootstrap list is required')
  const node = new DHT({ bootstrap })
  await node.ready()
  const hexList = (s) => (s || '').split(',').filter(Boolean).map((h) => Buffer.from(h, 'hex'))
  const secrets = hexList(a3)
  const kept = []
  const watch = (stream) => {
    stream.on('data', (b) => {
      if (secrets.length) kept.push(Buffer.from(b))
    })
    stream.on('error', () => {})
  }
  if (secrets.length) {
    process.stdin.setEncoding('utf8')
    let buf = ''
    process.stdin.on('data', (s) => {
      buf += s
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const [cmd, more] = buf.slice(0, i).trim().split(/\s+/)
        buf = buf.slice(i + 1)
        if (cmd !== 'report') continue
        const all = secrets.concat(hexList(more))
        const seen = kept.filter((b) => all.some((x) => b.includes(x))).length
        console.log('frames ' + kept.length + ' secret ' + seen)
      }
    })
  }
  if (a1 === 'tcp') {
    const server = net.createServer((socket) => {
      const s = new TCPStream(false, socket)
      watch(s)
      relay(node, s)
    })
    server.listen(0, '127.0.0.1', () => console.log('listening ' + server.address().port))
  } else {
    const wss = new ws.WebSocketServer({ host: '127.0.0.1', port: 0 }, () => console.log('listening ' + wss.address().port))
    wss.on('connection', (socket) => {
      const s = new WSStream(false, socket)
      watch(s)
      relay(node, s)
    })
  }
}

async function runDial () {
  const custodial = a4 !== 'noncustodial'
  const node = new RelayedNode(connect(a1), { custodial })
  const size = Number(a3)
  const data = crypto.randomBytes(size)
  const s = node.connect(Buffer.from(a2, 'hex'))
  const h = crypto.createHash('sha256')
  s.on('error', (err) => { console.log('error ' + err.message); process.exit(1) })
  s.on('data', (b) => h.update(b))
  s.on('end', () => {
    console.log('result ' + crypto.createHash('sha256').update(data).digest('hex') + ' ' + h.digest('hex'))
    s.end()
    setTimeout(() => process.exit(0), 100)
  })
  s.write(data)
  s.end()
}

async function runListen () {
  const custodial = a3 !== 'noncustodial'
  const node = new RelayedNode(connect(a1), { custodial })
  const kp = DHT.keyPair(Buffer.from(a2, 'hex'))
  const server = node.createServer((s) => {
    console.log('connection ' + s.remotePublicKey.toString('hex'))
    s.on('error', () => {})
    s.pipe(s)
  })
  await server.listen(kp)
  console.log('listening ' + kp.publicKey.toString('hex'))
}

const run = { relay: runRelay, dial: runDial, listen: runListen }[mode]
if (!run) {
  console.error('usage: dhtrelay-node.js relay|dial|listen ...')
  process.exit(2)
}
run().catch((err) => { console.log('error ' + err.message); process.exit(1) })
