// A hyperdht 6.34.0 peer for dht/'s connect interop tests, on a local
// testnet only (bootstrap list required).
//
//   node hyperdht-peer.js server <bootstrap> <seed> [allow-pk]
//       listens on the seed's key pair, echoes every connection (ending
//       its side when the client ends), prints "listening <pk>" and, per
//       connection, "connection <remote pk> <remote host:port>". With
//       allow-pk its firewall denies every other client, printing
//       "denied <remote pk>" (hyperdht then stays silent to that client).
//   node hyperdht-peer.js client <bootstrap> <pk> <bytes> [count]
//       connects count times (default 1), each time sends <bytes> random
//       bytes, ends, reads the echo and prints
//       "result <ms to open> <sha256 sent> <sha256 received> <remote host:port>"
//       or "error <code> <message>". It waits until the node is fully
//       bootstrapped (NAT classified) before the first connect, so <ms to
//       open> is the connect alone.
//   node hyperdht-peer.js ttfb <bootstrap> <pk> <count> [relay-pk]
//       after bootstrapping, connects count times, one after the other: each
//       time writes one byte, waits for the first byte back and closes;
//       prints "ttfb <ms, fractional> <remote host:port>" per connection, or
//       "error <code> <message>". With relay-pk the client asks for that
//       blind relay (connect's relayThrough).
const DHT = require('hyperdht')
const crypto = require('crypto')

const [mode, boot, arg, size, count] = process.argv.slice(2)
const relayPK = mode === 'ttfb' ? count : null // ttfb's fourth argument
const bootstrap = boot.split(',').filter(Boolean)
if (!bootstrap.length) {
  console.error('hyperdht-peer.js: a local bootstrap list is required')
  process.exit(2)
}
const node = new DHT({ bootstrap })

async function server () {
  const kp = DHT.keyPair(Buffer.from(arg, 'hex'))
  const allow = size ? Buffer.from(size, 'hex') : null
  const firewall = (remotePublicKey) => {
    if (!allow || remotePublicKey.equals(allow)) return false
    console.log('denied ' + remotePublicKey.toString('hex'))
    return true
  }
  const srv = node.createServer({ firewall }, (s) => {
    console.log('connection ' + s.remotePublicKey.toString('hex') + ' ' + s.rawStream.remoteHost + ':' + s.rawStream.remotePort)
    s.on('error', () => {})
    s.pipe(s)
  })
  await srv.listen(kp)
  console.log('listening ' + kp.publicKey.toString('hex'))
}

function once (pk, n) {
  return new Promise((resolve) => {
    const start = Date.now()
    const s = node.connect(Buffer.from(pk, 'hex'))
    const data = crypto.randomBytes(n)
    const sent = crypto.createHash('sha256').update(data).digest('hex')
    const got = crypto.createHash('sha256')
    let opened = 0
    s.on('open', () => {
      opened = Date.now() - start
      let off = 0
      const step = () => {
        while (off < data.length) {
          const k = Math.min(data.length - off, 1 + Math.floor(Math.random() * 65536))
          const more = s.write(data.subarray(off, off + k))
          off += k
          if (!more) return s.once('drain', step)
        }
        s.end()
      }
      step()
    })
    s.on('data', (d) => got.update(d))
    s.on('end', () => {
      const r = s.rawStream ? s.rawStream.remoteHost + ':' + s.rawStream.remotePort : '-'
      console.log('result ' + opened + ' ' + sent + ' ' + got.digest('hex') + ' ' + r)
      s.end()
      resolve()
    })
    s.on('error', (e) => {
      console.log('error ' + (e.code || 'ERR') + ' ' + e.message)
      resolve()
    })
  })
}

async function client () {
  await node.fullyBootstrapped()
  for (let i = 0; i < Number(count || 1); i++) await once(arg, Number(size))
  await node.destroy()
  process.exit(0)
}

function ttfbOnce (pk) {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint()
    const opts = relayPK ? { relayThrough: Buffer.from(relayPK, 'hex') } : {}
    const s = node.connect(Buffer.from(pk, 'hex'), opts)
    s.write(Buffer.from([1]))
    s.once('data', () => {
      const r = s.rawStream ? s.rawStream.remoteHost + ':' + s.rawStream.remotePort : '-'
      console.log('ttfb ' + (Number(process.hrtime.bigint() - start) / 1e6).toFixed(3) + ' ' + r)
      s.destroy()
      resolve()
    })
    s.on('error', (e) => {
      console.log('error ' + (e.code || 'ERR') + ' ' + e.message)
      resolve()
    })
  })
}

async function ttfb () {
  await node.fullyBootstrapped()
  for (let i = 0; i < Number(size); i++) await ttfbOnce(arg)
  await node.destroy()
  process.exit(0)
}

if (mode === 'server') server()
else if (mode === 'ttfb') ttfb()
else client()
