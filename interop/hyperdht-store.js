// Runs hyperdht 6.34.0's own persistent-node handlers (lib/persistent.js
// with lib/router.js) for dht/wire's store cross-check. Usage:
//   node hyperdht-store.js <nodeIdHex>
// Each stdin line is "<command> <target> <token> <value> <fromHost:port>",
// command one of lookup findpeer announce unannounce mutableput mutableget
// immutableput immutableget; "-" is null and "=" an empty buffer. Each line
// is answered with "res reply <hex>|res reply null|res error <code>|res silent".
const b4a = require('b4a')
const readline = require('readline')
const Persistent = require('hyperdht/lib/persistent')
const Router = require('hyperdht/lib/router')

const maxSize = 65536
const maxAge = 20 * 60 * 1000
const dht = { id: b4a.from(process.argv[2], 'hex'), _router: null, plugins: new Map() }
dht._router = new Router(dht, { forwards: { maxSize, maxAge } })
const persistent = new Persistent(dht, {
  records: { maxSize, maxAge },
  refreshes: { maxSize, maxAge },
  mutables: { maxSize: maxSize / 2, maxAge: 48 * 3600 * 1000 },
  immutables: { maxSize: maxSize / 2, maxAge: 48 * 3600 * 1000 },
  bumps: { maxSize, maxAge }
})

const arg = (s) => (s === '-' ? null : s === '=' ? b4a.alloc(0) : b4a.from(s, 'hex'))

console.log('ready')
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, target, token, value, from] = line.trim().split(' ')
  const i = from.lastIndexOf(':')
  let out = 'silent'
  const req = {
    target: arg(target),
    token: arg(token),
    value: arg(value),
    from: { host: from.slice(0, i), port: Number(from.slice(i + 1)) },
    reply (v) { out = v ? 'reply ' + b4a.toString(v, 'hex') : 'reply null' },
    error (code) { out = 'error ' + code }
  }
  try {
    persistent['on' + cmd](req)
  } catch (err) {
    out = 'throw ' + err.message.replace(/\s+/g, '_')
  }
  console.log('res ' + out)
})
