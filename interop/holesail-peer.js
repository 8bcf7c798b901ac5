// holesail 2.4.1 (holesail, holesail-server, holesail-client) on a local
// testnet, for keytunnel's holesail interop tests. Usage:
//
//   node holesail-peer.js <bootstrap> server <host> <port> public|secure [key]
//       new Holesail({ server: true, ... }) as `holesail --live` runs it;
//       prints "url <connection string>" and "publicKey <z32>" once it
//       listens and its record is put.
//   node holesail-peer.js <bootstrap> client <url> [port]
//       new Holesail({ client: true, key: url }) as `holesail <url>` runs
//       it (the port from the server's record unless given); prints
//       "listening <host>:<port> <protocol>".
//   node holesail-peer.js <bootstrap> rawserver <host> <port> <seed hex> public|secure
//       holesail-server's own API; prints "key <its key>" (z32 seed in
//       secure mode, z32 public key otherwise).
//   node holesail-peer.js <bootstrap> lookup <url>
//       Holesail.lookup: prints "lookup <JSON of the record found>".
//
// holesail's @holesail/hyper-cmd-lib-net requires bare-dgram, which needs
// the Bare runtime; its TCP paths never use it, so it is mapped to Node's
// dgram. holesail makes its HyperDHT without options (the public
// network): hyperdht is replaced by a subclass that always bootstraps
// from the local testnet, before holesail loads, so that nothing is ever
// sent anywhere else.
const Module = require('module')
const resolve = Module._resolveFilename
Module._resolveFilename = function (request, ...rest) {
  return resolve.call(this, request === 'bare-dgram' ? 'dgram' : request, ...rest)
}

const [boot, mode, ...args] = process.argv.slice(2)
const bootstrap = (boot || '').split(',').filter(Boolean)
if (!bootstrap.length) {
  console.error('holesail-peer.js: a local bootstrap list is required')
  process.exit(2)
}
const HyperDHT = require('hyperdht')
class TestnetDHT extends HyperDHT {
  constructor (opts = {}) {
    super({ ...opts, bootstrap })
  }
}
require.cache[require.resolve('hyperdht')].exports = TestnetDHT

const Holesail = require('holesail')
const HolesailServer = require('holesail-server')

async function main () {
  switch (mode) {
    case 'server': {
      const [host, port, secure, key] = args
      const hs = new Holesail({ server: true, host, port: Number(port), secure: secure === 'secure', key: key || undefined, udp: false })
      await hs.ready()
      while (hs.dht.state !== 'listening') await new Promise((resolve) => setTimeout(resolve, 20))
      console.log('url ' + hs.info.url)
      console.log('publicKey ' + hs.info.publicKey)
      break
    }
    case 'client': {
      const [url, port] = args
      const hs = new Holesail({ client: true, key: url, port: port ? Number(port) : undefined })
      await hs.ready()
      // ready resolves before the local proxy listens.
      while (hs.dht.state !== 'listening') await new Promise((resolve) => setTimeout(resolve, 20))
      const i = hs.info
      console.log('listening ' + i.host + ':' + i.port + ' ' + i.protocol)
      break
    }
    case 'rawserver': {
      const [host, port, seed, secure] = args
      const srv = new HolesailServer()
      await new Promise((resolve) => srv.start({ host, port: Number(port), seed, secure: secure === 'secure', udp: false }, resolve))
      console.log('key ' + srv.key)
      break
    }
    case 'lookup': {
      console.log('lookup ' + JSON.stringify(await Holesail.lookup(args[0])))
      process.exit(0)
      break
    }
    default:
      console.error('holesail-peer.js: unknown mode ' + mode)
      process.exit(2)
  }
}

main().catch((err) => {
  console.log('error ' + err.message)
  process.exit(1)
})
