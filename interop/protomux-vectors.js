// Prints protomux 3.12.1 frames for fixed scenarios, as one JSON object
// { scenario: [hex frame, ...] } on stdout. The mux runs over a fake
// message-framed stream: every write() is one recorded frame, and frames
// "from the peer" are fed with emit('data').
const { EventEmitter } = require('events')
const Protomux = require('protomux')
const c = require('compact-encoding')

class FakeStream extends EventEmitter {
  constructor () { super(); this.userData = null; this.frames = []; this.destroyed = false }
  write (buf) { this.frames.push(Buffer.from(buf).toString('hex')); return true }
  end () {}
  pause () {}
  resume () {}
  destroy (err) { this.destroyed = true; this.error = err ? err.message : null }
}

function setup () {
  const s = new FakeStream()
  return { s, mux: new Protomux(s) }
}
const feed = (s, hex) => s.emit('data', Buffer.from(hex, 'hex'))
const out = {}

{ // sheet example 1
  const { s, mux } = setup()
  mux.createChannel({ protocol: 'blind-relay', id: Buffer.alloc(32, 0x11) }).open()
  out.openBlindRelay = s.frames
}
{ // sheet example 2
  const { s, mux } = setup()
  mux.createChannel({ protocol: '@hyperswarm/dht-relay' }).open()
  out.openNoID = s.frames
}
{ // sheet batch example
  const { s, mux } = setup()
  mux.cork()
  const ch = mux.createChannel({ protocol: 'x' })
  const m = ch.addMessage({ encoding: c.uint })
  ch.open()
  m.send(5)
  m.send(6)
  mux.uncork()
  out.corked = s.frames
}
{ // messages, handshake, close
  const { s, mux } = setup()
  const ch = mux.createChannel({ protocol: 'p', id: Buffer.from('abc'), handshake: c.uint })
  const raw = ch.addMessage({ encoding: c.raw })
  const num = ch.addMessage({ encoding: c.uint })
  const str = ch.addMessage({ encoding: c.string })
  ch.open(7)
  raw.send(Buffer.from('hello'))
  num.send(300)
  str.send('')
  num.send(0x10000)
  ch.close()
  out.messages = s.frames
}
{ // reject of an unwanted open; pairing an open the peer sent first
  const { s, mux } = setup()
  feed(s, '000101' + '03' + Buffer.from('foo').toString('hex') + '00')
  mux.pair({ protocol: 'bar' }, () => {})
  out.reject = s.frames.slice()
}
{ // id reuse
  const { s, mux } = setup()
  const a = mux.createChannel({ protocol: 'a' }); a.open()
  const b = mux.createChannel({ protocol: 'b' }); b.open()
  feed(s, '00010101' + Buffer.from('a').toString('hex') + '00') // peer opens a with its id 1
  a.close() // acked: id 1 free at once
  mux.createChannel({ protocol: 'c' }).open() // reuses 1
  b.close() // not acked: id 2 stays reserved
  mux.createChannel({ protocol: 'd' }).open() // gets 3
  feed(s, '000202') // peer rejects our 2: now free
  mux.createChannel({ protocol: 'e' }).open() // reuses 2
  out.idReuse = s.frames
}
{ // batch switching channels, with control messages inside
  const { s, mux } = setup()
  const a = mux.createChannel({ protocol: 'a' }); const ma = a.addMessage({ encoding: c.raw }); a.open()
  const b = mux.createChannel({ protocol: 'b' }); const mb = b.addMessage({ encoding: c.raw }); b.open()
  mux.cork()
  ma.send(Buffer.from('1'))
  mb.send(Buffer.from('22'))
  ma.send(Buffer.from('333'))
  mux.createChannel({ protocol: 'c' }).open()
  b.close()
  mux.uncork()
  out.batchSwitch = s.frames
}
{ // large ids: the 300th channel
  const { s, mux } = setup()
  for (let i = 0; i < 300; i++) mux.createChannel({ protocol: 'n' + i }).open()
  out.bigIDs = s.frames.slice(251, 254).concat(s.frames.slice(299))
}
{ // a corked batch of 2 MiB messages is cut past 8 MiB
  const { s, mux } = setup()
  const a = mux.createChannel({ protocol: 'a' }); const ma = a.addMessage({ encoding: c.raw }); a.open()
  s.frames = []
  mux.cork()
  for (let i = 0; i < 6; i++) ma.send(Buffer.alloc(2 * 1024 * 1024, i))
  mux.uncork()
  const crypto = require('crypto')
  out.bigBatch = s.frames.map(h => { const b = Buffer.from(h, 'hex'); return b.length + ':' + crypto.createHash('sha256').update(b).digest('hex') })
}
{ // received messages (type, decoded) for a channel the peer opened first, with pending buffering
  const { s, mux } = setup()
  const got = []
  let accept
  mux.pair({ protocol: 'q' }, () => new Promise((resolve) => { accept = resolve }))
  feed(s, '00010101' + Buffer.from('q').toString('hex') + '00' + '0a0b') // handshake bytes 0a0b
  feed(s, '0100' + Buffer.from('early').toString('hex'))
  feed(s, '0105aa') // unknown type: ignored
  const ch = mux.createChannel({ protocol: 'q', handshake: c.raw, onopen (hs) { got.push('open:' + Buffer.from(hs).toString('hex')) } })
  ch.addMessage({ encoding: c.raw, onmessage (m) { got.push('0:' + Buffer.from(m).toString()) } })
  ch.open(Buffer.from('ff', 'hex'))
  accept()
  setImmediate(() => {
    feed(s, '0100' + Buffer.from('late').toString('hex'))
    out.received = { frames: s.frames, got }
    process.stdout.write(JSON.stringify(out) + '\n')
  })
}
