// hyperdht 6.34.0 wire vectors for dht/wire's tests.
//
// First prints, one line each:
//   vec <name> <hex>            a message encoded by hyperdht/lib/messages.js
//   sig <name> <hex>            a signature made by hyperdht/lib/persistent.js
//   ns <name> <hex>             a namespace from hyperdht/lib/constants.js
//   sp <name> <hex>             a holepunch payload sealed by lib/secure-payload.js
//   tok <host> <hex>            a secure-payload token
// then "ready". After that it answers commands on stdin, one a line:
//   dec <encoding> <hex>        -> "dec ok <re-encoded hex> <json>" | "dec err <message>"
//   open <secret> <hex>         -> "open ok <re-encoded plaintext hex>" | "open null"
//   verify <pk> <msg> <sig>     -> "verify true" | "verify false"  (libsodium rules)
const c = require('compact-encoding')
const b4a = require('b4a')
const sodium = require('sodium-universal')
const readline = require('readline')
const m = require('hyperdht/lib/messages')
const { NS } = require('hyperdht/lib/constants')
const Persistent = require('hyperdht/lib/persistent')
const SecurePayload = require('hyperdht/lib/secure-payload')
const hcrypto = require('hypercore-crypto')
const haddr = require('hyperdht-address')

const hex = (b) => b4a.toString(b, 'hex')
const fill = (n, v) => b4a.alloc(n, v)
const a = (host, port) => ({ host, port })
const H = (b) => { const o = b4a.alloc(32); sodium.crypto_generichash(o, b); return o }

const peerA = { publicKey: fill(32, 0x42), relayAddresses: [a('1.1.1.1', 49737)] }
const peerB = { publicKey: fill(32, 0x01), relayAddresses: [] }
const peerFive = {
  publicKey: fill(32, 0x55),
  relayAddresses: [a('1.0.0.1', 1), a('1.0.0.2', 2), a('1.0.0.3', 3), a('1.0.0.4', 4), a('1.0.0.5', 5)]
}

const npNone = { error: 0, firewall: 0, holepunch: null, addresses4: [], addresses6: [], udx: null, secretStream: null, relayThrough: null, relayAddresses: null }
const np = (o) => Object.assign({}, npNone, o)

const hpp = {
  'hpp-min': { error: 0, firewall: 0, round: 0, connected: false, punching: false, addresses: null, remoteAddress: null, token: null, remoteToken: null },
  'hpp-probe': { error: 0, firewall: 2, round: 1, connected: false, punching: false, addresses: [a('1.2.3.4', 5000)], remoteAddress: a('5.6.7.8', 9000), token: null, remoteToken: null },
  'hpp-empty-addrs': { error: 0, firewall: 1, round: 2, connected: true, punching: false, addresses: [], remoteAddress: null, token: null, remoteToken: null },
  'hpp-all': { error: 3, firewall: 3, round: 252, connected: true, punching: true, addresses: [a('9.9.9.9', 1), a('8.8.8.8', 65535)], remoteAddress: a('7.7.7.7', 7), token: fill(32, 0xa1), remoteToken: fill(32, 0xb2) }
}

const vectors = [
  ['hs-relay', m.handshake, { mode: 2, noise: b4a.from('0102', 'hex'), peerAddress: a('1.2.3.4', 49737), relayAddress: null }],
  ['hs-client', m.handshake, { mode: 0, noise: fill(32, 0x11), peerAddress: null, relayAddress: null }],
  ['hs-both', m.handshake, { mode: 3, noise: b4a.from('aabbcc', 'hex'), peerAddress: a('10.0.0.1', 1), relayAddress: a('255.255.255.255', 65535) }],
  ['hs-empty-noise', m.handshake, { mode: 4, noise: b4a.alloc(0), peerAddress: null, relayAddress: a('0.0.0.0', 0) }],
  ['hp-sheet', m.holepunch, { mode: 0, id: 3, payload: b4a.from('aabb', 'hex'), peerAddress: a('1.2.3.4', 49737) }],
  ['hp-big', m.holepunch, { mode: 4, id: 70000, payload: fill(300, 0x5a), peerAddress: null }],
  ['np-client', m.noisePayload, np({ addresses4: [a('192.168.1.2', 4000)], udx: { reusableSocket: false, id: 0x01020304, seq: 0 }, secretStream: {} })],
  ['np-server', m.noisePayload, np({
    firewall: 3,
    holepunch: { id: 0, relays: [{ relayAddress: a('1.1.1.1', 49737), peerAddress: a('2.2.2.2', 5555) }] },
    udx: { reusableSocket: true, id: 7, seq: 0 },
    secretStream: {},
    relayThrough: { publicKey: fill(32, 0xcc), token: fill(32, 0xdd) },
    relayAddresses: [a('1.1.1.1', 49737)]
  })],
  ['np-min', m.noisePayload, np({ firewall: 1 })],
  ['np-empty-relays', m.noisePayload, np({ relayAddresses: [] })],
  ['np-v6', m.noisePayload, np({ error: 3, addresses6: [a('2001:db8::1', 5000), a('::1', 1)] })],
  ['np-all', m.noisePayload, np({
    error: 2,
    firewall: 3,
    holepunch: { id: 300, relays: [{ relayAddress: a('3.3.3.3', 3), peerAddress: a('4.4.4.4', 4) }, { relayAddress: a('5.5.5.5', 5), peerAddress: a('6.6.6.6', 6) }] },
    addresses4: [a('10.1.1.1', 1000), a('10.2.2.2', 2000)],
    addresses6: [a('fe80::1', 3000)],
    udx: { reusableSocket: true, id: 0xffffffff, seq: 5 },
    secretStream: {},
    relayThrough: { publicKey: fill(32, 0x01), token: fill(32, 0x02) },
    relayAddresses: [a('1.1.1.1', 1), a('2.2.2.2', 2), a('3.3.3.3', 3)]
  })],
  ...Object.entries(hpp).map(([k, v]) => [k, m.holepunchPayload, v]),
  ['peer-sheet', m.peer, peerA],
  ['peer-none', m.peer, peerB],
  ['peer-five', m.peer, peerFive],
  ['lrr-sheet', m.lookupRawReply, { peers: [c.encode(m.peer, { publicKey: fill(32, 0x42), relayAddresses: [] })], bump: 0 }],
  ['lrr-two-bump', m.lookupRawReply, { peers: [c.encode(m.peer, peerA), c.encode(m.peer, peerFive)], bump: 1700000000000 }],
  ['lrr-empty', m.lookupRawReply, { peers: [], bump: 7 }],
  ['ann-full', m.announce, { peer: peerA, refresh: fill(32, 0x33), signature: fill(64, 0x44), bump: 12345 }],
  ['ann-peer-sig', m.announce, { peer: peerB, refresh: null, signature: fill(64, 0x45), bump: 0 }],
  ['ann-refresh-only', m.announce, { peer: null, refresh: fill(32, 0x34), signature: null, bump: 0 }],
  ['ann-empty', m.announce, { peer: null, refresh: null, signature: null, bump: 0 }],
  ['msig', m.mutableSignable, { seq: 1, value: b4a.from('hello') }],
  ['mput', m.mutablePutRequest, { publicKey: fill(32, 0x07), seq: 300, value: b4a.from('hello'), signature: fill(64, 0x09) }],
  ['mget', m.mutableGetResponse, { seq: 2 ** 32, value: b4a.alloc(0), signature: fill(64, 0x0a) }],
  ['plug-sheet', m.pluginRequest, { plugin: 'x', version: 1, command: 2, value: b4a.from('00', 'hex') }],
  ['plug-novalue', m.pluginRequest, { plugin: 'dht-stats', version: 3, command: 0, value: null }],
  ['plug-emptyvalue', m.pluginRequest, { plugin: 'é', version: 300, command: 70000, value: b4a.alloc(0) }]
]

for (const [name, enc, v] of vectors) console.log('vec ' + name + ' ' + hex(c.encode(enc, v)))
console.log('vec addr-key ' + hex(haddr.encode(fill(32, 0x61), null)))
console.log('vec addr-nodes ' + hex(haddr.encode(fill(32, 0x62), [a('1.2.3.4', 1), a('5.6.7.8', 2)])))

for (const k of Object.keys(NS)) console.log('ns ' + k + ' ' + hex(NS[k]))

{
  const kp = hcrypto.keyPair(fill(32, 0x07))
  const target = H(kp.publicKey)
  const token = fill(32, 0x01)
  const id = fill(32, 0x02)
  const ann = { peer: { publicKey: kp.publicKey, relayAddresses: [] }, refresh: null }
  console.log('sig ann-sheet ' + hex(Persistent.signAnnounce(target, token, id, ann, kp)))
  console.log('sig unann-sheet ' + hex(Persistent.signUnannounce(target, token, id, ann, kp)))
  const topic = fill(32, 0x77)
  const ann2 = { peer: { publicKey: kp.publicKey, relayAddresses: peerFive.relayAddresses }, refresh: fill(32, 0x33) }
  console.log('sig ann-relays-refresh ' + hex(Persistent.signAnnounce(topic, fill(16, 0x05), fill(32, 0x06), ann2, kp)))
  console.log('sig unann-relays-refresh ' + hex(Persistent.signUnannounce(topic, fill(16, 0x05), fill(32, 0x06), ann2, kp)))
  console.log('sig mut-sheet ' + hex(Persistent.signMutable(1, b4a.from('hello'), kp)))
  console.log('sig mut-big ' + hex(Persistent.signMutable(2 ** 40, fill(1000, 0xee), kp)))
  console.log('sig mut-empty ' + hex(Persistent.signMutable(0, b4a.alloc(0), kp)))
}

{
  const sp = new SecurePayload(fill(32, 0x51))
  sp._localSecret = fill(32, 0x52)
  for (const [k, v] of Object.entries(hpp)) console.log('sp ' + k + ' ' + hex(sp.encrypt(v)))
  for (const host of ['1.2.3.4', '255.255.255.255', '::1']) console.log('tok ' + host + ' ' + hex(sp.token({ host, port: 1 })))
}

console.log('ready')

const encodings = {
  handshake: m.handshake,
  holepunch: m.holepunch,
  noisePayload: m.noisePayload,
  holepunchPayload: m.holepunchPayload,
  peer: m.peer,
  announce: m.announce,
  mutableSignable: m.mutableSignable,
  mutablePutRequest: m.mutablePutRequest,
  mutableGetResponse: m.mutableGetResponse,
  pluginRequest: m.pluginRequest
}

function json (v) {
  return JSON.stringify(v, (k, x) => (x && x.type === 'Buffer' && Array.isArray(x.data)) ? b4a.toString(b4a.from(x.data), 'hex') : x)
}

function dec (name, buf) {
  if (name === 'lookupRawReply') {
    const r = c.decode(m.lookupRawReply, buf)
    const re = c.encode(m.lookupRawReply, { peers: r.peers.map((p) => c.encode(m.peer, p)), bump: r.bump })
    return [re, r]
  }
  if (name === 'address') {
    const r = haddr.decode(buf)
    return [haddr.encode(r.key, r.nodes), r]
  }
  const enc = encodings[name]
  if (!enc) throw new Error('unknown encoding ' + name)
  const r = c.decode(enc, buf)
  return [c.encode(enc, r), r]
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const [cmd, ...args] = line.trim().split(' ')
  if (cmd === 'dec') {
    try {
      const [re, r] = dec(args[0], b4a.from(args[1] || '', 'hex'))
      console.log('dec ok ' + hex(re) + ' ' + json(r))
    } catch (err) {
      console.log('dec err ' + err.message.replace(/\s+/g, '_'))
    }
  } else if (cmd === 'open') {
    const sp = new SecurePayload(b4a.from(args[0], 'hex'))
    const p = sp.decrypt(b4a.from(args[1] || '', 'hex'))
    console.log(p === null ? 'open null' : 'open ok ' + hex(c.encode(m.holepunchPayload, p)))
  } else if (cmd === 'verify') {
    const [pk, msg, sig] = args.map((x) => b4a.from(x || '', 'hex'))
    let ok = false
    try {
      ok = pk.byteLength === 32 && sig.byteLength === 64 && sodium.crypto_sign_verify_detached(sig, msg, pk)
    } catch {}
    console.log('verify ' + ok)
  } else {
    console.log('unknown ' + cmd)
  }
})
