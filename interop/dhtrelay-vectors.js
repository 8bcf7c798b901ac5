// Prints @hyperswarm/dht-relay 0.4.3 wire vectors, one JSON object per line,
// then "done". Kinds:
//
//   {"kind":"open","frame":hex}
//       the protomux OPEN frame Protocol sends for its channel
//   {"kind":"encode","name":s,"type":n,"body":hex,"frame":hex}
//       a sample message (the same samples are in relay/dhtrelay's
//       vectors_test.go, by name) encoded with lib/messages.js, and the
//       whole frame lib/protocol.js writes for it
//   {"kind":"codec","name":s,"codec":c,"hex":hex}
//       a sample of a lib/codecs.js codec (announcers, peer)
//   {"kind":"decode","type":n|codec,"in":hex,"ok":bool,"re":hex}
//       an edge-case body (truncated, trailing byte, flag and length
//       bytes replaced): whether the reference's decoder accepts it and,
//       if so, what re-encoding the decoded value gives
//
// Everything is run with the reference's own modules: dht-relay's messages,
// codecs and Protocol, its nested compact-encoding 2.x, protomux 3.12.1.
const path = require('path')
const { EventEmitter } = require('events')

const root = path.join(__dirname, 'node_modules', '@hyperswarm', 'dht-relay')
const m = require(path.join(root, 'lib', 'messages.js'))
const codecs = require(path.join(root, 'lib', 'codecs.js'))
const { Protocol } = require(path.join(root, 'lib', 'protocol.js'))
const c = require(require.resolve('compact-encoding', { paths: [root] }))

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const hex = (b) => Buffer.from(b).toString('hex')
const fill = (n, v) => Buffer.alloc(n, v)

function encode (enc, v) {
  const state = { start: 0, end: 0, buffer: null }
  enc.preencode(state, v)
  state.buffer = Buffer.alloc(state.end)
  enc.encode(state, v)
  if (state.start !== state.end) throw new Error('encode size mismatch')
  return state.buffer
}

// decode as protomux does: a state over exactly the body, trailing bytes
// left unread.
function decode (enc, buf) {
  return enc.decode({ start: 0, end: buf.byteLength, buffer: buf })
}

// A stream that records every write as one frame.
class FakeStream extends EventEmitter {
  constructor () { super(); this.userData = null; this.frames = [] }
  write (buf) { this.frames.push(hex(buf)); return true }
  end () {}
  pause () {}
  resume () {}
  destroy () {}
}

const pk = fill(32, 0x11)
const sk = Buffer.concat([fill(32, 0x22), pk])
const rpk = fill(32, 0x33)
const hash = fill(64, 0x44)
const topic = fill(32, 0x55)
const token = fill(32, 0x66)

const samples = [
  ['handshake', 'handshake-noncustodial', { custodial: false, publicKey: pk }],
  ['handshake', 'handshake-custodial', { custodial: true, publicKey: pk, secretKey: sk }],
  ['ping', 'ping', null],
  ['pong', 'pong', null],
  ['connect', 'connect-noncustodial', { custodial: false, alias: 1, publicKey: pk, remotePublicKey: rpk }],
  ['connect', 'connect-custodial', { custodial: true, alias: 0xfffffffe, publicKey: pk, secretKey: sk, remotePublicKey: rpk }],
  ['connection', 'connection-noncustodial', { custodial: false, alias: 7, serverAlias: 8, remotePublicKey: rpk, handshakeId: 9 }],
  ['connection', 'connection-custodial', { custodial: true, alias: 7, serverAlias: 8, remotePublicKey: rpk, handshakeHash: hash }],
  ['connected', 'connected', { alias: 0x12345678, remoteAlias: 0x9abcdef0 }],
  ['incoming', 'incoming', { id: 3, serverAlias: 4, remotePublicKey: rpk, payload: Buffer.from('payload') }],
  ['incoming', 'incoming-empty', { id: 3, serverAlias: 4, remotePublicKey: rpk, payload: Buffer.alloc(0) }],
  ['deny', 'deny', { id: 300 }],
  ['accept', 'accept', { id: 70000 }],
  ['destroy', 'destroy-paired-error', { paired: true, alias: 5, error: 'boom' }],
  ['destroy', 'destroy-unpaired', { paired: false, remoteAlias: 6 }],
  ['destroy', 'destroy-unpaired-error', { paired: false, remoteAlias: 6, error: 'connection refused ✗' }],
  ['destroy', 'destroy-paired-empty-error', { paired: true, alias: 5, error: '' }],
  ['listen', 'listen-noncustodial', { custodial: false, alias: 2, server: 2, publicKey: pk }],
  ['listen', 'listen-custodial', { custodial: true, alias: 2, server: 2, publicKey: pk, secretKey: sk }],
  ['listening', 'listening', { alias: 2, remoteAlias: 3, host: '1.2.3.4', port: 49737 }],
  ['close', 'close', { alias: 2 }],
  ['closed', 'closed', { alias: 0 }],
  ['open', 'open-noncustodial', { custodial: false, alias: 10, remoteAlias: 11, handshakeId: 12 }],
  ['open', 'open-custodial', { custodial: true, alias: 10, remoteAlias: 11, handshakeHash: hash }],
  ['end', 'end', { alias: 4 }],
  ['data', 'data', { alias: 2, data: [Buffer.from('hi'), Buffer.alloc(0)] }],
  ['data', 'data-empty', { alias: 2, data: [] }],
  ['data', 'data-big', { alias: 2, data: [fill(300, 0xab), fill(70000, 0xcd)] }],
  ['result', 'result', { id: 5, data: Buffer.from('0102', 'hex') }],
  ['finished', 'finished', { id: 5 }],
  ['lookup', 'lookup', { id: 5, topic }],
  ['announce', 'announce-noncustodial', { custodial: false, id: 6, topic, publicKey: pk }],
  ['announce', 'announce-custodial', { custodial: true, id: 6, topic, publicKey: pk, secretKey: sk }],
  ['unannounce', 'unannounce-noncustodial', { custodial: false, id: 7, topic, publicKey: pk }],
  ['unannounce', 'unannounce-custodial', { custodial: true, id: 7, topic, publicKey: pk, secretKey: sk }],
  ['signAnnounce', 'signAnnounce', { id: 8, signee: 6, token, peerId: fill(32, 0x77), relayAddresses: [{ host: '10.0.0.1', port: 1 }, { host: '192.168.1.254', port: 65535 }] }],
  ['signAnnounce', 'signAnnounce-nopeer', { id: 8, signee: 6, token, peerId: null, relayAddresses: [] }],
  ['signUnannounce', 'signUnannounce', { id: 9, signee: 2, token, peerId: fill(32, 0x77), relayAddresses: [] }],
  ['signature', 'signature', { id: 8, signature: fill(64, 0x88) }],
  ['noiseSend', 'noiseSend-initiator', { isInitiator: true, id: 13, remoteStreamAlias: 1, payload: Buffer.from('np') }],
  ['noiseSend', 'noiseSend-responder', { isInitiator: false, id: 13, payload: Buffer.from('np') }],
  ['noiseReceive', 'noiseReceive-initiator', { isInitiator: true, id: 14, payload: fill(80, 0x99) }],
  ['noiseReceive', 'noiseReceive-responder', { isInitiator: false, id: 14, serverAlias: 2, payload: fill(80, 0x99) }],
  ['noiseReply', 'noiseReply-initiator-send', { isInitiator: true, complete: false, id: 15, payload: fill(96, 0xaa) }],
  ['noiseReply', 'noiseReply-initiator-complete', { isInitiator: true, complete: true, id: 15, payload: Buffer.from('np'), remoteId: fill(32, 0xbb), holepunchSecret: fill(32, 0xcc) }],
  ['noiseReply', 'noiseReply-responder-recv', { isInitiator: false, complete: false, id: 16, payload: Buffer.from('np'), remotePublicKey: rpk }],
  ['noiseReply', 'noiseReply-responder-deny', { isInitiator: false, complete: false, id: 16, payload: Buffer.alloc(0), remotePublicKey: rpk }],
  ['noiseReply', 'noiseReply-responder-complete', { isInitiator: false, complete: true, id: 16, payload: fill(48, 0xdd), remoteId: fill(32, 0xbb), holepunchSecret: fill(32, 0xcc) }]
]

const codecSamples = [
  ['announcers', 'announcers', {
    token,
    from: { id: fill(32, 0x01), host: '1.1.1.1', port: 49737 },
    to: { id: null, host: '2.2.2.2', port: 1 },
    peers: [
      { publicKey: pk, relayAddresses: [] },
      { publicKey: rpk, relayAddresses: [{ host: '3.3.3.3', port: 3 }] }
    ]
  }],
  ['announcers', 'announcers-nopeers', {
    token,
    from: { id: null, host: '0.0.0.0', port: 0 },
    to: { id: fill(32, 0x02), host: '255.255.255.255', port: 65535 },
    peers: []
  }],
  ['peer', 'peer', { publicKey: pk, relayAddresses: [{ host: '4.4.4.4', port: 4 }] }]
]

// The Protocol over a recording stream gives the exact frames.
const stream = new FakeStream()
const protocol = new Protocol(stream)
out({ kind: 'open', frame: stream.frames.shift() })

const names = Object.keys(m)
const edge = [] // [typeOrCodec, encoding, body]

for (const [msg, name, value] of samples) {
  const type = names.indexOf(msg)
  const body = encode(m[msg], value)
  protocol[msg].send(value)
  const frames = stream.frames.splice(0)
  if (frames.length !== 1) throw new Error(name + ': ' + frames.length + ' frames')
  out({ kind: 'encode', name, type, body: hex(body), frame: frames[0] })
  edge.push([type, m[msg], body])
}

for (const [codec, name, value] of codecSamples) {
  const buf = encode(codecs[codec], value)
  out({ kind: 'codec', name, codec, hex: hex(buf) })
  edge.push([codec, codecs[codec], buf])
}

// Edge cases: every truncation, a trailing byte, and bytes replaced by
// 0xff / 0xfd / 0x03 / 0x00 (flag bytes, varint prefixes, lengths).
const seen = new Set()
function tryDecode (type, enc, buf) {
  const key = type + ':' + hex(buf)
  if (seen.has(key)) return
  seen.add(key)
  let v
  try {
    v = decode(enc, buf)
  } catch {
    out({ kind: 'decode', type, in: hex(buf), ok: false })
    return
  }
  if (enc === m.listen && v) v.server = v.alias
  out({ kind: 'decode', type, in: hex(buf), ok: true, re: hex(encode(enc, v)) })
}

for (const [type, enc, body] of edge) {
  const n = Math.min(body.length, 200)
  for (let i = 0; i < n; i++) tryDecode(type, enc, body.subarray(0, i))
  tryDecode(type, enc, Buffer.concat([body, Buffer.from([0x42])]))
  for (let i = 0; i < Math.min(body.length, 48); i++) {
    for (const x of [0xff, 0xfd, 0x03, 0x00]) {
      const b = Buffer.from(body)
      b[i] = x
      tryDecode(type, enc, b)
    }
  }
}

// Lengths far beyond the body: must be refused without allocating.
for (const [type, body] of [
  [names.indexOf('data'), '02000000' + 'ff' + 'ffffffffffffff7f'],
  [names.indexOf('data'), '02000000' + 'fe' + 'ffffff7f' + '00'],
  [names.indexOf('data'), '02000000' + '01' + 'feffffff7f'],
  [names.indexOf('result'), '05000000' + 'feffffffff'],
  [names.indexOf('signAnnounce'), '0800000006000000' + '66'.repeat(32) + '00' + 'fe00001000']
]) {
  tryDecode(type, m[names[type]], Buffer.from(body, 'hex'))
}

out({ kind: 'done' })
console.log('done')
