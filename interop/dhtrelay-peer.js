// An @hyperswarm/dht-relay 0.4.3 Protocol that echoes every message back.
//
//   node dhtrelay-peer.js tcp|ws
//   node dhtrelay-peer.js ws-client <url>
//
// Listens on 127.0.0.1 (a random port) with the reference's transport —
// tcp: @hyperswarm/dht-relay/tcp (secret-stream, responder); ws: a ws
// server with @hyperswarm/dht-relay/ws — prints "listening <port>", and for
// each connection runs lib/protocol.js's Protocol: every message it emits
// is printed ("got <name>") and sent back unchanged with the same message
// type. Ping is answered with pong by the Protocol itself.
const net = require('net')
const path = require('path')

const root = path.join(__dirname, 'node_modules', '@hyperswarm', 'dht-relay')
const { Protocol } = require(path.join(root, 'lib', 'protocol.js'))
const messages = require(path.join(root, 'lib', 'messages.js'))
const TCPStream = require('@hyperswarm/dht-relay/tcp')
const WSStream = require('@hyperswarm/dht-relay/ws')

const mode = process.argv[2]

function serve (stream) {
  const protocol = new Protocol(stream)
  for (const name of Object.keys(messages)) {
    if (name === 'ping' || name === 'pong') continue
    protocol.on(name, (m) => {
      console.log('got ' + name)
      protocol[name].send(m)
    })
  }
  stream.on('error', (err) => console.log('error ' + err.message))
  stream.on('close', () => console.log('closed'))
}

if (mode === 'tcp') {
  const server = net.createServer((socket) => serve(new TCPStream(false, socket)))
  server.listen(0, '127.0.0.1', () => console.log('listening ' + server.address().port))
} else if (mode === 'ws') {
  const { WebSocketServer } = require(require.resolve('ws', { paths: [root] }))
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 }, () => console.log('listening ' + wss.address().port))
  wss.on('connection', (socket) => serve(new WSStream(false, socket)))
} else if (mode === 'ws-client') {
  // The client role of the transport: connect to a Go WebSocket server.
  const { WebSocket } = require(require.resolve('ws', { paths: [root] }))
  const socket = new WebSocket(process.argv[3])
  serve(new WSStream(true, socket))
  socket.on('open', () => console.log('connected'))
} else {
  console.error('usage: dhtrelay-peer.js tcp|ws|ws-client <url>')
  process.exit(2)
}
