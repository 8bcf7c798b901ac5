// holesail 2.4.1's UDP mode (holesail-server / holesail-client with
// udp: true, over @holesail/hyper-cmd-lib-net's framed UDP piping) on a
// local testnet, for keytunnel's UDP interop tests.
//
//   node holesail-udp.js server <bootstrap> <seed hex> <target port>
//       serves the UDP service on 127.0.0.1:<target port> under the
//       seed's key pair; prints "holesail-udp-server <public key hex>"
//   node holesail-udp.js client <bootstrap> <public key hex> <local port>
//       forwards UDP 127.0.0.1:<local port> to the service behind the key;
//       prints "holesail-udp-client 127.0.0.1:<port>"
//   node holesail-udp.js bench <bootstrap> <public key hex> <count> <size>
//       client mode plus a load generator in this process: sends <count>
//       datagrams of <size> bytes through the client's port to an echo
//       service and prints "bench <sent> <received> <seconds> <p50 ms> <p99 ms>"
//       (round trips of one datagram at a time first, then a burst)
//
// holesail is written for Bare: its UDP code requires 'bare-dgram', which
// Node lacks, so Node's 'dgram' stands in (same createSocket/bind/send/
// 'message' API). holesail builds its own HyperDHT with the public
// bootstrap nodes; here every HyperDHT it makes gets the local testnet
// instead, so nothing leaves loopback.
const Module = require('module')
const HyperDHT = require('hyperdht')

const [mode, boot, arg, portArg, sizeArg] = process.argv.slice(2)
const bootstrap = (boot || '').split(',').filter(Boolean)
if (!bootstrap.length) {
  console.error('holesail-udp.js: a local bootstrap list is required')
  process.exit(2)
}

class TestnetDHT extends HyperDHT {
  constructor (opts = {}) {
    super({ ...opts, bootstrap })
  }
}

const load = Module._load
Module._load = function (request, parent, isMain) {
  if (request === 'bare-dgram') return require('dgram')
  if (request === 'hyperdht') return TestnetDHT
  return load.call(this, request, parent, isMain)
}

const HolesailServer = require('holesail-server')
const HolesailClient = require('holesail-client')
const z32 = require('z32')

async function server () {
  const s = new HolesailServer()
  await new Promise((resolve) => {
    s.start({ port: +portArg, host: '127.0.0.1', udp: true, seed: arg }, resolve)
  })
  console.log('holesail-udp-server ' + s.keyPair.publicKey.toString('hex'))
}

async function client (port) {
  const c = new HolesailClient({ key: z32.encode(Buffer.from(arg, 'hex')) })
  await new Promise((resolve) => {
    c.connect({ port, host: '127.0.0.1', udp: true }, resolve)
  })
  return c
}

async function bench () {
  const dgram = require('dgram')
  const c = await client(0)
  const port = c.proxy.address().port
  const count = +portArg
  const size = +sizeArg
  const sock = dgram.createSocket('udp4')
  await new Promise((resolve) => sock.bind(0, '127.0.0.1', resolve))
  const payload = Buffer.alloc(size, 7)
  let waiting = null
  let received = 0
  sock.on('message', () => {
    received++
    if (waiting) { const w = waiting; waiting = null; w() }
  })
  const rtts = []
  for (let i = 0; i < 2000; i++) {
    const t0 = process.hrtime.bigint()
    const got = new Promise((resolve) => { waiting = resolve })
    sock.send(payload, port, '127.0.0.1')
    const ok = await Promise.race([got.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 1000))])
    if (ok && i >= 100) rtts.push(Number(process.hrtime.bigint() - t0) / 1e6)
  }
  rtts.sort((a, b) => a - b)
  const p = (q) => rtts.length ? rtts[Math.min(rtts.length - 1, Math.floor(q * rtts.length))] : -1
  received = 0
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < count; i++) {
    sock.send(payload, port, '127.0.0.1')
    if (i % 64 === 63) await new Promise((resolve) => setImmediate(resolve))
  }
  let last = -1
  while (received !== last) {
    last = received
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9 - 0.5
  console.log(`bench ${count} ${received} ${secs.toFixed(3)} ${p(0.5).toFixed(4)} ${p(0.99).toFixed(4)}`)
  process.exit(0)
}

async function main () {
  if (mode === 'server') return server()
  if (mode === 'client') {
    const c = await client(+portArg)
    console.log('holesail-udp-client 127.0.0.1:' + c.proxy.address().port)
    return
  }
  if (mode === 'bench') return bench()
  console.error('usage: holesail-udp.js server|client|bench ...')
  process.exit(2)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
