// Prints blind-relay 1.6.1 wire vectors, one JSON object per line, then
// "done". Used by relay/blindrelay/vectors_test.go. Kinds:
//
//   {"kind":"encode","name":s,"msg":"pair"|"unpair","body":hex}
//       a sample message (the same samples are in vectors_test.go, by
//       name) encoded with blind-relay's own m.pair / m.unpair
//   {"kind":"decode","msg":"pair"|"unpair","in":hex,"ok":bool,
//    "isInitiator":b,"token":hex,"id":n,"seq":n,"used":n}
//       an edge-case body (flags in every bitfield form, non-minimal
//       uints, truncations, trailing bytes): whether the reference decodes
//       it, the decoded fields and how many bytes the decoder consumed
//   {"kind":"frames","name":s,"frames":[hex...]}
//       every frame a real blind-relay Client / Server writes to its stream
//       for a scripted exchange (channel OPEN, pair, unpair, the server's
//       pair reply), captured from a fake duplex stream
//
// Everything runs with the reference's modules: blind-relay's messages,
// Client and Server, its compact-encoding and protomux.
const path = require('path')
const { Duplex } = require('streamx')
const root = path.join(__dirname, 'node_modules', 'blind-relay')
const relay = require(root)
const c = require(require.resolve('compact-encoding', { paths: [root] }))
const m = relay.messages

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

const samples = [
  ['pair-initiator-300', 'pair', { isInitiator: true, token: fill(32, 0xab), id: 300, seq: 0 }],
  ['pair-responder-5', 'pair', { isInitiator: false, token: fill(32, 0xab), id: 5, seq: 0 }],
  ['pair-id-0', 'pair', { isInitiator: false, token: fill(32, 0x00), id: 0, seq: 0 }],
  ['pair-id-fc', 'pair', { isInitiator: true, token: fill(32, 0x01), id: 0xfc, seq: 0xfd }],
  ['pair-id-max32', 'pair', { isInitiator: true, token: fill(32, 0xff), id: 0xffffffff, seq: 0x10000 }],
  ['pair-id-2^40', 'pair', { isInitiator: false, token: fill(32, 0x5a), id: 2 ** 40, seq: 1 }],
  ['unpair', 'unpair', { token: fill(32, 0xab) }],
  ['unpair-zero', 'unpair', { token: fill(32, 0x00) }]
]
for (const [name, msg, v] of samples) out({ kind: 'encode', name, msg, body: hex(encode(m[msg], v)) })

const tok = 'cd'.repeat(32)
const decodes = {
  pair: [
    '01' + tok + '0500', '00' + tok + '0500', '02' + tok + '0500', '03' + tok + '0500',
    'fc' + tok + '0500', 'fd0100' + tok + '0500', 'fd0001' + tok + '0500',
    'fe01000000' + tok + '0500', 'ff0100000000000000' + tok + '0500', 'ff00' + tok + '0500',
    '01' + tok + 'fd0500' + '00', '01' + tok + 'fe05000000' + 'fd0100',
    '01' + tok + 'ff0500000000000000' + '00', '01' + tok + 'feffffffff' + '00',
    '01' + tok + 'ff0000000001000000' + '00',
    '01' + tok + '0500' + 'eeee', '01' + tok + '05', '01' + tok, '01' + tok.slice(2), '01', '',
    'fd01' + tok + '0500', 'fd', '01' + tok + 'fd05', '01' + tok + '05fe0100'
  ],
  unpair: [
    '00' + tok, '01' + tok, 'fd0000' + tok, 'ff' + '00'.repeat(8) + tok, '00' + tok + '00', '00' + tok.slice(2), '00', ''
  ]
}
for (const msg of Object.keys(decodes)) {
  for (const h of decodes[msg]) {
    const state = { start: 0, end: h.length / 2, buffer: Buffer.from(h, 'hex') }
    try {
      const v = m[msg].decode(state)
      out({ kind: 'decode', msg, in: h, ok: true, isInitiator: !!v.isInitiator, token: hex(v.token), id: v.id === undefined ? 0 : v.id, seq: v.seq === undefined ? 0 : v.seq, used: state.start })
    } catch (err) {
      out({ kind: 'decode', msg, in: h, ok: false })
    }
  }
}

function capture () {
  const frames = []
  const stream = new Duplex({ write (data, cb) { frames.push(hex(data)); cb(null) } })
  return { stream, frames }
}

async function main () {
  {
    // A client: OPEN with id = its public key, then pair, then unpair.
    const { stream, frames } = capture()
    const client = new relay.Client(stream, { id: fill(32, 0x11) })
    const req = client.pair(true, fill(32, 0xab), { id: 300 })
    req.on('error', () => {})
    req.resume()
    await new Promise((resolve) => setImmediate(resolve))
    client.unpair(fill(32, 0xab))
    await new Promise((resolve) => setImmediate(resolve))
    out({ kind: 'frames', name: 'client', frames })
  }
  {
    // A server session: OPEN, and after two pair requests on its channel
    // (remote channel id 1 after the peer's OPEN) the pair replies.
    const { stream, frames } = capture()
    let next = 0x1000
    const server = new relay.Server({
      createStream (opts) {
        const id = next++
        return { id, on () { return this }, relayTo () {}, destroy () {}, off () { return this } }
      }
    })
    server.accept(stream, { id: fill(32, 0x22) })
    const open = Buffer.from('0001010b' + hex('blind-relay') + '20' + '22'.repeat(32), 'hex')
    stream.push(open)
    stream.push(Buffer.concat([Buffer.from('0100', 'hex'), encode(m.pair, { isInitiator: true, token: fill(32, 0xab), id: 7, seq: 0 })]))
    stream.push(Buffer.concat([Buffer.from('0100', 'hex'), encode(m.pair, { isInitiator: false, token: fill(32, 0xab), id: 8, seq: 0 })]))
    await new Promise((resolve) => setTimeout(resolve, 50))
    out({ kind: 'frames', name: 'server', frames })
  }
  out({ kind: 'done' })
  process.exit(0)
}
main().catch((err) => { console.error(err); process.exit(1) })
