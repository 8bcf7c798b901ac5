// Node side of keytunnel's secretstream interop tests
// (secretstream/interop_test.go).
//
// Usage: node secretstream-peer.js --port P --role initiator|responder
//          --mode xx|ik --seed HEX32 [--remote HEXPK] --size N
//
// Connects to 127.0.0.1:P over TCP (half-open allowed) and runs an
// @hyperswarm/secret-stream on it:
//   xx: the stream's own XX handshake with the key pair from --seed;
//   ik: an IK handshake (noise-handshake + noise-curve-ed, prologue
//       NS.PEER_HANDSHAKE as hyperdht does) whose messages travel as hex on
//       stdout/stdin ("ik1 HEX" from the initiator, "ik2 HEX" back), and
//       whose result is passed to secret-stream as opts.handshake;
//   keys: opts.handshake from --tx, --rx, --hash (hex), as if a handshake
//       had happened elsewhere.
// Then it sends --size random bytes in random-sized writes while receiving,
// ends its side, and prints:
//   pubkey HEX              at start
//   handshake REMOTEPK HASH once the stream is open
//   sent SHA256             once everything is written
//   recv N SHA256           at the peer's end
//   empty K                 number of empty chunks delivered (must be 0)
//   done
const net = require('net')
const crypto = require('crypto')
const readline = require('readline')
const minimist = require('minimist')
const SecretStream = require('@hyperswarm/secret-stream')
const Noise = require('noise-handshake')
const curve = require('noise-curve-ed')
const { NS } = require('hyperdht/lib/constants')

const argv = minimist(process.argv.slice(2), { string: ['seed', 'remote', 'role', 'mode', 'tx', 'rx', 'hash'] })
const isInitiator = argv.role === 'initiator'
const size = Number(argv.size)
const keyPair = SecretStream.keyPair(Buffer.from(argv.seed, 'hex'))
const remote = argv.remote ? Buffer.from(argv.remote, 'hex') : null

console.log('pubkey ' + keyPair.publicKey.toString('hex'))
console.log('prologue ' + NS.PEER_HANDSHAKE.toString('hex'))

const lines = readline.createInterface({ input: process.stdin })
const waiting = []
lines.on('line', (l) => { const w = waiting.shift(); if (w) w(l) })
const nextLine = () => new Promise((resolve) => waiting.push(resolve))

function fail (err) {
  console.error(err && err.stack ? err.stack : err)
  process.exit(1)
}

async function ikHandshake () {
  const hs = new Noise('IK', isInitiator, keyPair, { curve })
  hs.initialise(NS.PEER_HANDSHAKE, isInitiator ? remote : null)
  if (isInitiator) {
    console.log('ik1 ' + Buffer.from(hs.send()).toString('hex'))
    const [tag, hex] = (await nextLine()).split(' ')
    if (tag !== 'ik2') throw new Error('expected ik2, got ' + tag)
    hs.recv(Buffer.from(hex, 'hex'))
  } else {
    const [tag, hex] = (await nextLine()).split(' ')
    if (tag !== 'ik1') throw new Error('expected ik1, got ' + tag)
    hs.recv(Buffer.from(hex, 'hex'))
    console.log('ik2 ' + Buffer.from(hs.send()).toString('hex'))
  }
  if (!hs.complete) throw new Error('IK handshake incomplete')
  return { tx: hs.tx, rx: hs.rx, hash: hs.hash, publicKey: keyPair.publicKey, remotePublicKey: hs.rs }
}

async function main () {
  let handshake = null
  if (argv.mode === 'ik') handshake = await ikHandshake()
  if (argv.mode === 'keys') {
    const hex = (h) => Buffer.from(h, 'hex')
    handshake = { tx: hex(argv.tx), rx: hex(argv.rx), hash: hex(argv.hash), publicKey: keyPair.publicKey, remotePublicKey: remote }
  }
  const socket = net.connect({ port: Number(argv.port), host: '127.0.0.1', allowHalfOpen: true })
  socket.setNoDelay(true)
  const opts = handshake ? { handshake, keepAlive: 5000 } : { keyPair }
  const s = new SecretStream(isInitiator, socket, opts)
  s.on('error', fail)

  s.on('connect', () => {
    if (remote && !s.remotePublicKey.equals(remote)) fail(new Error('remote public key mismatch'))
    console.log('handshake ' + s.remotePublicKey.toString('hex') + ' ' + s.handshakeHash.toString('hex'))
  })

  let ended = 0
  // Exit only after the socket closes: destroying earlier could drop
  // written bytes that are still queued in the socket.
  const finish = () => { if (++ended === 3) console.log('done') }
  socket.on('close', () => { if (ended < 3) fail(new Error('socket closed early')); process.exit(0) })
  s.on('finish', finish)

  const rh = crypto.createHash('sha256')
  let received = 0
  let empty = 0
  s.on('data', (d) => { if (d.byteLength === 0) empty++; received += d.byteLength; rh.update(d) })
  s.on('end', () => {
    console.log('recv ' + received + ' ' + rh.digest('hex'))
    console.log('empty ' + empty)
    finish()
  })

  const sh = crypto.createHash('sha256')
  let left = size
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, 1 + crypto.randomInt(256 * 1024))
      const buf = crypto.randomBytes(n)
      sh.update(buf)
      left -= n
      if (!s.write(buf)) return s.once('drain', pump)
    }
    console.log('sent ' + sh.digest('hex'))
    s.end()
    finish()
  }
  pump()
}

main().catch(fail)
