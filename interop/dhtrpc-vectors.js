// Prints dht-rpc 6.27.0 message encodings, one "name hex" line each, made by
// the reference's own encoder (lib/io.js Request) over a fake socket, for
// dht/rpc's vector test. Then reads hex datagrams on stdin, one a line, and
// prints how the reference decodes each ("dec <json>" or "dec null").
const IO = require('dht-rpc/lib/io')
const b4a = require('b4a')
const readline = require('readline')

let sent = null
const sock = { trySend (buf, port, host) { sent = { buf: b4a.from(buf), port, host } } }
const fakeUdx = { watchNetworkInterfaces () { return { on () {}, destroy () {} } } }
const closer = [{ host: '5.6.7.8', port: 1000 }, { host: '9.9.9.9', port: 2000 }]
const table = { id: b4a.alloc(32, 0x11), closest (t) { return closer } }

function mkio (ephemeral) {
  const io = new IO(table, fakeUdx, { onrequest () {} })
  io.ephemeral = ephemeral
  io.serverSocket = sock
  io.clientSocket = { trySend: sock.trySend }
  io._secrets = [b4a.alloc(32, 1), b4a.alloc(32, 2)]
  return io
}

const out = (name, buf) => console.log(name + ' ' + b4a.toString(buf, 'hex'))
const to = { host: '1.2.3.4', port: 49737 }
const aa = b4a.alloc(32, 0xaa)
const bb = b4a.alloc(32, 0xbb)

function req (io, tid, token, internal, command, target, value, socket) {
  io._tid = tid
  const r = io.createRequest(to, token, internal, command, target, value, null)
  return { r, buf: r._encodeRequest(token, value, to, socket) }
}

{
  const io = mkio(true)
  out('req-findnode', req(io, 0x1234, null, true, 2, aa, null, io.clientSocket).buf)
  out('req-ping', req(io, 0x1235, null, true, 0, null, null, io.clientSocket).buf)
  out('req-empty-value', req(io, 0x0001, null, false, 300, null, b4a.alloc(0), io.clientSocket).buf)
  out('req-pingnat', req(io, 0xffff, null, true, 1, null, b4a.from([0x34, 0x12]), io.clientSocket).buf)
}
{
  const io = mkio(false)
  out('req-persistent', req(io, 0x1236, bb, false, 4, aa, b4a.from([1, 2]), io.serverSocket).buf)
  out('req-persistent-client', req(io, 0x1236, bb, false, 4, aa, b4a.from([1, 2]), io.clientSocket).buf)
  const { r } = req(io, 0x1237, null, false, 7, aa, b4a.from('hi'), io.serverSocket)
  r.relay(b4a.from('relayed'), { host: '4.3.2.1', port: 7 }, { socket: io.serverSocket })
  out('relay', sent.buf)
}

// Replies: decode an incoming request through io.onmessage, then answer.
function incoming (io, reqBuf, socket, from) {
  let got = null
  io.onrequest = (r) => { got = r }
  io.onmessage(socket, reqBuf, from)
  return got
}
const from = { host: '10.0.0.1', port: 5000 }
{
  const io = mkio(false)
  const wire = req(mkio(true), 0x1234, null, false, 9, aa, null, sock).buf
  const r = incoming(io, wire, io.serverSocket, from)
  r.reply(null)
  out('res-persistent-token-closer', sent.buf)
  r.sendReply(0, null, false, true)
  out('res-findnode', sent.buf)
  r.reply(b4a.from('value'), { closerNodes: false, token: false })
  out('res-value', sent.buf)
  r.error(300, { token: true })
  out('res-error-300-token', sent.buf)
  r.reply(null, { to: { host: '8.8.4.4', port: 53 } })
  out('res-to-other', sent.buf)
}
{
  const io = mkio(true)
  const wire = req(mkio(true), 0x1234, null, true, 77, null, null, sock).buf
  const r = incoming(io, wire, io.serverSocket, from)
  r.error(1)
  out('res-unknown-command', sent.buf)
  // a request with a wrong token gets INVALID_TOKEN with a fresh token
  const bad = req(mkio(true), 0x4321, bb, false, 5, null, null, sock).buf
  io.onmessage(io.serverSocket, bad, from)
  out('res-invalid-token', sent.buf)
}
console.log('done')

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const buf = b4a.from(line.trim(), 'hex')
  const io = mkio(true)
  let dec = null
  if (buf[0] === 0x03) {
    const Req = io.createRequest(to, null, true, 0, null, null, null).constructor
    const r = Req.decode(io, sock, { id: null, host: from.host, port: from.port }, { start: 1, end: buf.byteLength, buffer: buf })
    if (r) dec = { type: 'req', tid: r.tid, to: r.to.host + ':' + r.to.port, id: hex(r.from.id), token: hex(r.token), internal: r.internal, command: r.command, target: hex(r.target), value: hex(r.value) }
  } else if (buf[0] === 0x13) {
    io.createRequest(to, null, true, 0, null, null, null)
    const q = io.inflight[0]
    q.tid = buf.length > 3 ? buf.readUInt16LE(2) : 0
    q.onresponse = (m) => { dec = { type: 'res', tid: m.tid, to: m.to.host + ':' + m.to.port, id: hex(m.from.id), token: hex(m.token), closerNodes: m.closerNodes && m.closerNodes.map(n => n.host + ':' + n.port), error: m.error, value: hex(m.value) } }
    io.onmessage(io.serverSocket, buf, from)
  }
  console.log('dec ' + JSON.stringify(dec))
})
rl.on('close', () => process.exit(0))

function hex (b) { return b ? b4a.toString(b, 'hex') : null }
