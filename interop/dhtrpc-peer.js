// A dht-rpc 6.27.0 node on 127.0.0.1 for dht/rpc's interop tests.
//
//   node dhtrpc-peer.js bootstrap <port>            DHT.bootstrapper(port, '127.0.0.1')
//   node dhtrpc-peer.js node <host:port,...> [adaptive|ephemeral|persistent]
//
// Prints "port <server port>" once bound and "ready <id|null> <host>:<port>
// firewalled=<bool> ephemeral=<bool>" once bootstrapped. Application
// commands: 42 replies "node:" + value (with a token), 43 stores the value
// if the request carries a valid token (commit), 44 replies error 17.
// Commands on stdin, one a line:
//   findnode <target hex>            reply lines, then "closest ...", "end <ok> <err>"
//   query <cmd> <target hex> <value hex|->   same, with an application command
//   commit <cmd> <target hex> <value hex>    query with commit: true
//   ping <host:port> | pingnat <host:port>   "pong <to> <id|null>" or "err <code>"
//   request <cmd> <host:port> <value hex|-> "response <error> <value|null> <token|null>"
//   nodes | state | stored
const DHT = require('dht-rpc')
const b4a = require('b4a')
const readline = require('readline')

const [mode, arg, kind] = process.argv.slice(2)
let dht
if (mode === 'bootstrap') {
  dht = DHT.bootstrapper(Number(arg), '127.0.0.1', { host: '127.0.0.1' })
} else {
  const opts = { bootstrap: arg ? arg.split(',') : [], host: '127.0.0.1' }
  if (kind === 'ephemeral') opts.ephemeral = true
  if (kind === 'persistent') opts.ephemeral = false
  dht = new DHT(opts)
}

const stored = []
dht.on('request', (req) => {
  if (req.command === 42) return req.reply(b4a.concat([b4a.from('node:'), req.value || b4a.alloc(0)]))
  if (req.command === 43) {
    if (req.token) stored.push(b4a.toString(req.value || b4a.alloc(0), 'hex'))
    return req.reply(null)
  }
  if (req.command === 44) return req.error(17)
  req.error(DHT.ERROR_UNKNOWN_COMMAND)
})
dht.on('persistent', () => console.log('persistent ' + hex(dht.id)))

const hex = (b) => (b ? b4a.toString(b, 'hex') : 'null')
const addr = (a) => a.host + ':' + a.port
const parse = (s) => { const [host, port] = s.split(':'); return { host, port: Number(port) } }

dht.on('listening', () => console.log('port ' + dht.io.serverSocket.address().port + ' ' + dht.io.clientSocket.address().port))
dht.fullyBootstrapped().then(() => {
  console.log(`ready ${hex(dht.id)} ${dht.host}:${dht.port} firewalled=${dht.firewalled} ephemeral=${dht.ephemeral}`)
})

async function runQuery (q) {
  try {
    for await (const m of q) console.log(`reply ${addr(m.from)} ${hex(m.from.id)} ${m.value ? hex(m.value) : '-'}`)
    console.log('closest ' + q.closestReplies.map(m => addr(m.from)).join(','))
    console.log(`end ${q.successes} ${q.errors}`)
  } catch (err) {
    console.log('end-error ' + err.message)
  }
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const [cmd, a, b, c] = line.trim().split(' ')
  try {
    switch (cmd) {
      case 'findnode': return await runQuery(dht.findNode(b4a.from(a, 'hex')))
      case 'query': return await runQuery(dht.query({ command: Number(a), target: b4a.from(b, 'hex'), value: c && c !== '-' ? b4a.from(c, 'hex') : null }))
      case 'commit': return await runQuery(dht.query({ command: Number(a), target: b4a.from(b, 'hex'), value: b4a.from(c, 'hex') }, { commit: true }))
      case 'ping': {
        const m = await dht.ping(parse(a))
        return console.log(`pong ${addr(m.to)} ${hex(m.from.id)}`)
      }
      case 'pingnat': {
        const value = b4a.alloc(2)
        value.writeUInt16LE(dht.io.serverSocket.address().port)
        const m = await new Promise((resolve, reject) => dht._request({ id: null, ...parse(a) }, false, true, 1, null, value, null, resolve, reject))
        return console.log(`pong ${addr(m.to)} ${hex(m.from.id)}`)
      }
      case 'request': {
        const m = await dht.request({ command: Number(a), value: c && c !== '-' ? b4a.from(c, 'hex') : null }, parse(b))
        return console.log(`response ${m.error} ${hex(m.value)} ${hex(m.token)}`)
      }
      case 'nodes': return console.log('nodes ' + dht.toArray().map(addr).join(','))
      case 'state': return console.log(`state ${hex(dht.id)} ${dht.host}:${dht.port} firewalled=${dht.firewalled} ephemeral=${dht.ephemeral}`)
      case 'stored': return console.log('stored ' + stored.join(','))
    }
  } catch (err) {
    console.log('err ' + (err.code || err.message))
  }
})
rl.on('close', () => dht.destroy().then(() => process.exit(0)))
