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

async function main () {
  if (mode === 'server') return server()
  if (mode === 'client') {
    const c = await client(+portArg)
    console.log('holesail-udp-client 127.0.0.1:' + c.proxy.address().port)
    return
  }
  console.error('usage: holesail-udp.js server|client ...')
  process.exit(2)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
