// Noise vectors from the Node reference for secretstream/noise's tests.
//
//   node noise-vectors.js dh
//       reads "SEEDHEX PUBHEX" lines on stdin; for each prints
//       "dh <hex>" (noise-curve-ed's dh) or "dherr <message>" (libsodium refused).
//   node noise-vectors.js ik P1HEX P2HEX
//       an IK transcript through hyperdht's own lib/noise-wrap.js (so the
//       prologue is whatever hyperdht uses), static seeds 01×32 (client) and
//       02×32 (server), ephemeral seeds 03×32 and 04×32. P1HEX and P2HEX are
//       noisePayload encodings; they are decoded and handed to NoiseWrap.send,
//       which re-encodes them. Prints "ns_handshake|ns_holepunch <hex>",
//       "payload1|payload2 <hex>" (the bytes actually encrypted),
//       "msg1|msg2 <hex>", "read1|read2 <hex>" (payload bytes as decrypted),
//       and for side i (initiator) and r (responder):
//       "<side>hash|<side>tx|<side>rx|<side>hp|<side>rpk <hex>".
//   node noise-vectors.js xx [P1HEX P2HEX P3HEX]
//       an XX transcript with noise-handshake directly, empty prologue (as
//       @hyperswarm/secret-stream runs it), same fixed keys, optional raw
//       payloads (secret-stream sends none). Prints "msg1|msg2|msg3 <hex>"
//       and "ihash|itx|irx|rhash|rtx|rrx|irpk|rrpk <hex>".
//   node noise-vectors.js peer ROLE PATTERN SEED [REMOTEPK]
//       runs one side of a live handshake: reads peer messages as hex lines on
//       stdin, writes its own as "msg <hex>", prints "payload <utf8>" for each
//       message read, "error <message>" on failure, and at the end
//       "done <hashhex> <txhex> <rxhex> <remotepk>". Payloads are "node-" +
//       message index, as UTF-8. IK uses prologue NS.PEER_HANDSHAKE, XX none.
const Noise = require('noise-handshake')
const curve = require('noise-curve-ed')
const sodium = require('sodium-universal')
const c = require('compact-encoding')
const { NS } = require('hyperdht/lib/constants')
const NoiseWrap = require('hyperdht/lib/noise-wrap')
const m = require('hyperdht/lib/messages')
const readline = require('readline')

const realGenerate = curve.generateKeyPair
const seedKP = (b) => realGenerate(Buffer.alloc(32, b))
const hex = (b) => Buffer.from(b).toString('hex')
const out = (k, v) => console.log(k + ' ' + hex(v))

// Fixed ephemerals: noise-handshake asks its curve for a key pair, with no
// argument, exactly when it sends the e token; answer with the next seeded one.
function fixEphemerals (target, seeds) {
  target.generateKeyPair = (sk) => sk ? realGenerate(sk) : seedKP(seeds.shift())
}

const [mode, ...args] = process.argv.slice(2)

if (mode === 'dh') {
  readline.createInterface({ input: process.stdin }).on('line', (l) => {
    const [seedHex, pubHex] = l.trim().split(/\s+/)
    const kp = realGenerate(Buffer.from(seedHex, 'hex'))
    try {
      out('dh', curve.dh(Buffer.from(pubHex, 'hex'), kp))
    } catch (e) {
      console.log('dherr ' + e.message)
    }
  })
} else if (mode === 'ik') {
  out('ns_handshake', NS.PEER_HANDSHAKE)
  out('ns_holepunch', NS.PEER_HOLEPUNCH)
  const p1 = c.decode(m.noisePayload, Buffer.from(args[0], 'hex'))
  const p2 = c.decode(m.noisePayload, Buffer.from(args[1], 'hex'))
  out('payload1', c.encode(m.noisePayload, p1))
  out('payload2', c.encode(m.noisePayload, p2))
  // NoiseWrap passes the shared noise-curve-ed module as the curve, so
  // patching it fixes the ephemerals; the client sends first, so it takes 03.
  fixEphemerals(curve, [3, 4])
  const client = new NoiseWrap(seedKP(1), seedKP(2).publicKey)
  const server = new NoiseWrap(seedKP(2), null)
  // Copy at once: noise-handshake zeroes its ephemeral key, which the
  // message buffer views, when the handshake completes.
  const msg1 = Buffer.from(client.send(p1))
  out('msg1', msg1)
  out('read1', c.encode(m.noisePayload, server.recv(msg1)))
  const msg2 = Buffer.from(server.send(p2))
  out('msg2', msg2)
  out('read2', c.encode(m.noisePayload, client.recv(msg2)))
  curve.generateKeyPair = realGenerate
  for (const [side, w] of [['i', client], ['r', server]]) {
    const f = w.final()
    out(side + 'hash', f.hash)
    out(side + 'tx', f.tx)
    out(side + 'rx', f.rx)
    out(side + 'hp', f.holepunchSecret)
    out(side + 'rpk', f.remotePublicKey)
  }
} else if (mode === 'xx') {
  const payloads = [0, 1, 2].map((i) => Buffer.from(args[i] || '', 'hex'))
  const ini = new Noise('XX', true, seedKP(1), { curve: { ...curve } })
  const res = new Noise('XX', false, seedKP(2), { curve: { ...curve } })
  fixEphemerals(ini.curve, [3])
  fixEphemerals(res.curve, [4])
  ini.initialise(Buffer.alloc(0))
  res.initialise(Buffer.alloc(0))
  const sides = [ini, res, ini]
  for (let i = 0; i < 3; i++) {
    const msg = Buffer.from(sides[i].send(payloads[i]))
    out('msg' + (i + 1), msg)
    out('read' + (i + 1), sides[(i + 1) % 2].recv(msg))
  }
  for (const [side, hs] of [['i', ini], ['r', res]]) {
    out(side + 'hash', hs.hash)
    out(side + 'tx', hs.tx)
    out(side + 'rx', hs.rx)
    out(side + 'rpk', hs.rs)
  }
} else if (mode === 'peer') {
  const [role, pattern, seedHex, remoteHex] = args
  const initiator = role === 'initiator'
  const hs = new Noise(pattern, initiator, realGenerate(Buffer.from(seedHex, 'hex')), { curve })
  const prologue = pattern === 'IK' ? NS.PEER_HANDSHAKE : Buffer.alloc(0)
  hs.initialise(prologue, remoteHex ? Buffer.from(remoteHex, 'hex') : undefined)
  let idx = 0
  // Printed before anything can clear key material.
  const finish = () => {
    if (!hs.complete) return false
    console.log('done ' + hex(hs.hash) + ' ' + hex(hs.tx) + ' ' + hex(hs.rx) + ' ' + hex(hs.rs))
    process.exit(0)
  }
  const send = () => { out('msg', hs.send(Buffer.from('node-' + idx++))); finish() }
  if (initiator) send()
  readline.createInterface({ input: process.stdin }).on('line', (l) => {
    try {
      const p = hs.recv(Buffer.from(l.trim(), 'hex'))
      console.log('payload ' + Buffer.from(p).toString())
    } catch (e) {
      console.log('error ' + e.message)
      process.exit(1)
    }
    if (!finish()) send()
  })
} else {
  console.error('usage: see the comment at the top of noise-vectors.js')
  process.exit(2)
}
