// Node side of keytunnel's live protomux test (internal/protomux/interop_test.go).
//
// Usage: node protomux-peer.js --port P
//
// Connects to 127.0.0.1:P over TCP, runs @hyperswarm/secret-stream as the
// responder and protomux 3.12.1 over it, then:
//   * accepts "echo" channels (any id) the Go side opens: handshake c.string
//     (answers "node:" + Go's handshake); message 0 (raw) is echoed back
//     as "echo:" + data, message 1 (uint) is answered with n+1 on message 1;
//     a raw "close-please" makes Node close the channel;
//   * opens "node-chan" (id 0102, handshake c.string "hi-from-node") and,
//     once open, sends corked: raw "a", raw "b", uint 42;
//   * opens "reject-me" (which Go rejects);
//   * never accepts any other protocol (Go's "nobody" is rejected).
// Prints one line per event:
//   ready | open PROTO HS | msg PROTO TYPE HEX | closed PROTO remote=BOOL opened=BOOL
const net = require('net')
const minimist = require('minimist')
const SecretStream = require('@hyperswarm/secret-stream')
const Protomux = require('protomux')
const c = require('compact-encoding')

const argv = minimist(process.argv.slice(2))
const log = (s) => process.stdout.write(s + '\n')

const sock = net.connect(Number(argv.port), '127.0.0.1')
const ss = new SecretStream(false, sock)
ss.on('error', (err) => log('error ' + err.message))
ss.on('close', () => log('stream-closed'))
const mux = new Protomux(ss)

mux.pair({ protocol: 'echo' }, (id) => {
  let opened = false
  const ch = mux.createChannel({
    protocol: 'echo',
    id,
    handshake: c.string,
    onopen (hs) { opened = true; log('open echo ' + hs) },
    onclose (remote) { log('closed echo remote=' + remote + ' opened=' + opened) }
  })
  const raw = ch.addMessage({
    encoding: c.raw,
    onmessage (m) {
      log('msg echo 0 ' + Buffer.from(m).toString('hex'))
      if (Buffer.from(m).toString() === 'close-please') return ch.close()
      raw.send(Buffer.concat([Buffer.from('echo:'), m]))
    }
  })
  const num = ch.addMessage({
    encoding: c.uint,
    onmessage (n) { log('msg echo 1 ' + n); num.send(n + 1) }
  })
  ch.open('node:' + (id ? Buffer.from(id).toString('hex') : ''))
})

{
  let opened = false
  const ch = mux.createChannel({
    protocol: 'node-chan',
    id: Buffer.from('0102', 'hex'),
    handshake: c.string,
    onopen (hs) {
      opened = true
      log('open node-chan ' + hs)
      mux.cork()
      raw.send(Buffer.from('a'))
      raw.send(Buffer.from('b'))
      num.send(42)
      mux.uncork()
    },
    onclose (remote) { log('closed node-chan remote=' + remote + ' opened=' + opened) }
  })
  const raw = ch.addMessage({
    encoding: c.raw,
    onmessage (m) {
      log('msg node-chan 0 ' + Buffer.from(m).toString('hex'))
      if (Buffer.from(m).toString() === 'close-please') ch.close()
    }
  })
  const num = ch.addMessage({ encoding: c.uint })
  ch.open('hi-from-node')
}
{
  let opened = false
  const ch = mux.createChannel({
    protocol: 'reject-me',
    onopen () { opened = true; log('open reject-me') },
    onclose (remote) { log('closed reject-me remote=' + remote + ' opened=' + opened) }
  })
  ch.open()
}
ss.on('connect', () => log('ready'))
