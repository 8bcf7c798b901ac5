// Node side of keytunnel's blind-relay interop tests
// (relay/blindrelay/interop_test.go). No DHT: every connection is a
// udx-native stream on loopback whose ids are exchanged over stdin/stdout,
// with @hyperswarm/secret-stream (XX handshake) on top, as hyperdht would
// hand blind-relay after a connect.
//
// Usage:
//   node blindrelay-peer.js --role server
//     A blind-relay Server. createStream makes relay streams on the same
//     udx instance as its socket. Prints
//       ready PORT PUBKEY
//     and for each stdin line "conn PEERPORT PEERID" creates a stream,
//     connects it to the peer, answers
//       conn PEERID ID
//     runs the secret-stream responder on it and, once it is open, accepts
//     the blind-relay channel with id = the remote public key. On stdin
//     "stats" it prints
//       stats {"sessions":..,"matched":..,"pending":..,"active":..}
//
//   node blindrelay-peer.js --role client --relay-port P --token HEX
//        --initiator true|false --size N
//     A blind-relay Client. Prints
//       ready PORT CONNID
//     then waits for "relay RELAYID" on stdin (the relay's end of the
//     connection), connects, pairs a second raw stream with the token,
//     prints
//       paired REMOTEID
//     connects the raw stream to the relay, runs a secret-stream (initiator
//     iff --initiator) over it with the other peer, sends N bytes (4 KiB
//     chunks that each start with a plaintext marker) while receiving, ends
//     its side and prints
//       sent SHA256
//       recv N SHA256
//       done
const crypto = require('crypto')
const readline = require('readline')
const minimist = require('minimist')
const UDX = require('udx-native')
const SecretStream = require('@hyperswarm/secret-stream')
const relay = require('blind-relay')

const argv = minimist(process.argv.slice(2), { string: ['role', 'token', 'initiator'] })
const host = '127.0.0.1'
const log = (s) => process.stdout.write(s + '\n')
const fail = (err) => { console.error(err && err.stack ? err.stack : err); process.exit(1) }
const randomId = () => crypto.randomBytes(4).readUInt32LE(0) || 1
const MARKER = Buffer.from('KEYTUNNEL-PLAINTEXT-MARKER-3f9a7c')

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, host)
const port = socket.address().port
const keyPair = SecretStream.keyPair()
const lines = readline.createInterface({ input: process.stdin })
let finished = false

if (argv.role === 'server') server()
else if (argv.role === 'client') client()
else fail(new Error('--role server|client'))

function server () {
  const srv = new relay.Server({
    createStream (opts) { return udx.createStream(randomId(), opts) }
  })
  log('ready ' + port + ' ' + keyPair.publicKey.toString('hex'))
  lines.on('line', (line) => {
    const [cmd, a, b] = line.trim().split(' ')
    if (cmd === 'stats') {
      const s = srv.stats
      log('stats ' + JSON.stringify({
        sessions: s.sessions.active,
        matched: s.pairings.matched,
        pending: s.pairings.pending,
        active: s.pairings.active,
        cancelled: s.pairings.cancelled
      }))
      return
    }
    if (cmd !== 'conn') fail(new Error('bad line ' + line))
    const peerPort = Number(a)
    const peerId = Number(b)
    const id = randomId()
    const raw = udx.createStream(id)
    raw.on('error', () => {})
    raw.connect(socket, peerId, peerPort, host)
    log('conn ' + peerId + ' ' + id)
    const ss = new SecretStream(false, raw, { keyPair })
    ss.on('error', () => {})
    ss.on('connect', () => {
      const session = srv.accept(ss, { id: ss.remotePublicKey })
      session.on('error', () => {})
    })
  })
}

function client () {
  const relayPort = Number(argv['relay-port'])
  const token = Buffer.from(argv.token, 'hex')
  const isInitiator = argv.initiator === 'true'
  const size = Number(argv.size || 0)
  const conn = udx.createStream(randomId())
  const raw = udx.createStream(randomId())
  conn.on('error', () => {})
  // After "done" the peer may tear its stream down first; that is fine.
  raw.on('error', (err) => { if (!finished) fail(err) })
  // Exit only once the raw stream has closed: until then it may still be
  // retransmitting the tail of what was written.
  raw.on('close', () => process.exit(0))
  log('ready ' + port + ' ' + conn.id)

  lines.once('line', (line) => {
    const [cmd, rid] = line.trim().split(' ')
    if (cmd !== 'relay') fail(new Error('bad line ' + line))
    conn.connect(socket, Number(rid), relayPort, host)
    const ss = new SecretStream(true, conn, { keyPair })
    ss.on('error', fail)
    const c = relay.Client.from(ss, { id: keyPair.publicKey })
    c.pair(isInitiator, token, raw)
      .on('error', fail)
      .on('data', (remoteId) => {
        log('paired ' + remoteId)
        raw.connect(socket, remoteId, relayPort, host)
        // Heartbeats let the relay learn this side's address even while
        // the XX responder has nothing to send yet.
        raw.setKeepalive(50)
        transfer(new SecretStream(isInitiator, raw), size, () => {
          finished = true
          setTimeout(() => process.exit(0), 30000).unref()
        })
      })
  })
}

function transfer (s, size, ondone) {
  s.on('error', (err) => { if (!finished) fail(err) })
  let ended = 0
  const finish = () => { if (++ended === 2) { log('done'); ondone() } }
  const rh = crypto.createHash('sha256')
  let received = 0
  s.on('data', (d) => { received += d.byteLength; rh.update(d) })
  s.on('end', () => { log('recv ' + received + ' ' + rh.digest('hex')); finish() })

  const sh = crypto.createHash('sha256')
  let left = size
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, 4096)
      const buf = crypto.randomBytes(n)
      MARKER.copy(buf, 0, 0, Math.min(n, MARKER.length))
      sh.update(buf)
      left -= n
      if (!s.write(buf)) return s.once('drain', pump)
    }
    log('sent ' + sh.digest('hex'))
    s.end()
    finish()
  }
  pump()
}
