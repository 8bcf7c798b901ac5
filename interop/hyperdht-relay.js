// Blind-relay interop on a local hyperdht testnet (bootstrap required).
//
//   node hyperdht-relay.js relay <bootstrap> <seed>
//       a Node blind-relay server listening on the seed's key; prints
//       "relay <pk>", then "paired" each time it matches a pair.
//   node hyperdht-relay.js server <bootstrap> <seed> <relay pk>
//       an echo server that asks every client to go through the relay;
//       prints "listening <pk>".
//   node hyperdht-relay.js client <bootstrap> <pk> <relay pk> <bytes>
//       connects through the relay (client's relayThrough), sends <bytes>
//       random bytes, ends, prints
//       "result <sha256 sent> <sha256 received> <remote host:port>" or
//       "error <code> <message>".
//   node hyperdht-relay.js stream <bootstrap> <pk> <relay pk> <seconds>
//       connects through the relay, prints "open <remote host:port>", then
//       for <seconds> writes 64 KiB every 50 ms and checks the echo,
//       printing "path <remote host:port>" whenever the connection moves;
//       ends and prints "result <sha256 sent> <sha256 received> <remote>"
//       (the path at the end: a relayed connection may have moved).
const DHT = require('hyperdht')
const { Server: RelayServer } = require('blind-relay')
const crypto = require('crypto')

const [mode, boot, a, b, c] = process.argv.slice(2)
const bootstrap = boot.split(',').filter(Boolean)
if (!bootstrap.length) {
  console.error('hyperdht-relay.js: a local bootstrap list is required')
  process.exit(2)
}
const node = new DHT({ bootstrap })

async function relay () {
  const kp = DHT.keyPair(Buffer.from(a, 'hex'))
  const relay = new RelayServer({ createStream: (opts) => node.createRawStream({ ...opts, framed: true }) })
  const srv = node.createServer((socket) => {
    socket.on('error', () => {})
    const session = relay.accept(socket, { id: socket.remotePublicKey })
    session.on('pair', () => console.log('paired'))
    session.on('error', () => {})
  })
  await srv.listen(kp)
  console.log('relay ' + kp.publicKey.toString('hex'))
}

async function server () {
  const kp = DHT.keyPair(Buffer.from(a, 'hex'))
  const srv = node.createServer({ relayThrough: Buffer.from(b, 'hex') }, (s) => {
    s.on('error', () => {})
    s.pipe(s)
  })
  await srv.listen(kp)
  console.log('listening ' + kp.publicKey.toString('hex'))
}

function client () {
  const s = node.connect(Buffer.from(a, 'hex'), { relayThrough: Buffer.from(b, 'hex') })
  const data = crypto.randomBytes(Number(c))
  const sent = crypto.createHash('sha256').update(data).digest('hex')
  const got = crypto.createHash('sha256')
  s.on('open', () => { s.write(data); s.end() })
  s.on('data', (d) => got.update(d))
  s.on('end', () => {
    const r = s.rawStream ? s.rawStream.remoteHost + ':' + s.rawStream.remotePort : '-'
    console.log('result ' + sent + ' ' + got.digest('hex') + ' ' + r)
    s.end()
    node.destroy().then(() => process.exit(0))
  })
  s.on('error', (e) => {
    console.log('error ' + (e.code || 'ERR') + ' ' + e.message)
    process.exit(0)
  })
}

function stream () {
  const s = node.connect(Buffer.from(a, 'hex'), { relayThrough: Buffer.from(b, 'hex') })
  const sent = crypto.createHash('sha256')
  const got = crypto.createHash('sha256')
  const remote = () => s.rawStream ? s.rawStream.remoteHost + ':' + s.rawStream.remotePort : '-'
  s.on('open', () => {
    let path = remote()
    console.log('open ' + path)
    const until = Date.now() + Number(c) * 1000
    const tick = () => {
      if (remote() !== path) {
        path = remote()
        console.log('path ' + path)
      }
      if (Date.now() > until) return s.end()
      const chunk = crypto.randomBytes(65536)
      sent.update(chunk)
      s.write(chunk)
      setTimeout(tick, 50)
    }
    tick()
  })
  s.on('data', (d) => got.update(d))
  s.on('end', () => {
    console.log('result ' + sent.digest('hex') + ' ' + got.digest('hex') + ' ' + remote())
    s.end()
    node.destroy().then(() => process.exit(0))
  })
  s.on('error', (e) => {
    console.log('error ' + (e.code || 'ERR') + ' ' + e.message)
    process.exit(0)
  })
}

if (mode === 'relay') relay()
else if (mode === 'stream') stream()
else if (mode === 'server') server()
else client()
