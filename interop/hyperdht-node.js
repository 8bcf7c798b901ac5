// A hyperdht 6.34.0 network on 127.0.0.1 for dht/'s interop tests.
//
//   node hyperdht-node.js testnet <n> [bootstrap host:port,...]
//       createTestnet(n): a first node (bootstrapping from the given list
//       if any) and n-1 more; commands go through the last node.
//   node hyperdht-node.js node <bootstrap host:port,...>
//       one persistent, unfirewalled node.
//
// Prints "bootstrap <host:port>" (the first node) and "ready <host:port>,..."
// once every node is bootstrapped. Commands on stdin, one a line, each
// answered with one line:
//   announce <topic> <seed>          -> "announced"
//   unannounce <topic> <seed>        -> "unannounced"
//   lookup <topic>                   -> "lookup <pk,...|->"
//   findpeer <pk>                    -> "findpeer <pk,...|->"
//   mput <seed> <seq> <value>        -> "mput ok"
//   mget <pk> <seq> [first]          -> "mget <seq> <value>" | "mget null"
//   iput <value>                     -> "iput <hash>"
//   iget <hash>                      -> "iget <value>" | "iget null"
//   raw <cmd> <host:port> <target> <value|-> [notoken]
//       one request (with a token from a LOOKUP to the same node unless
//       notoken) -> "raw <error> <value|null>" | "raw timeout"
//   rawmput <host:port> <seed> <seq> <value>   a signed MUTABLE_PUT to one node
//       -> "raw <error> <value|null>" | "raw timeout"
//   bench <topic> <count>            -> "bench <ms per lookup>" (sequential lookups)
//   stored                           -> "stored <records> <mutables> <immutables>"
// Hex everywhere; seeds are 32 bytes.
const DHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const Persistent = require('hyperdht/lib/persistent')
const m = require('hyperdht/lib/messages')
const c = require('compact-encoding')
const b4a = require('b4a')
const readline = require('readline')

const [mode, a1, a2] = process.argv.slice(2)
const hex = (b) => b4a.toString(b, 'hex')
const unhex = (s) => b4a.from(s, 'hex')
const addr = (a) => a.host + ':' + a.port
const parse = (s) => { const [host, port] = s.split(':'); return { host, port: Number(port) } }
const kp = (seed) => DHT.keyPair(unhex(seed))

async function main () {
  let nodes
  if (mode === 'testnet') {
    const opts = { host: '127.0.0.1' }
    if (a2) opts.bootstrap = a2.split(',')
    const tn = await createTestnet(Number(a1), opts)
    nodes = tn.nodes
    console.log('bootstrap ' + (a2 ? a2.split(',')[0] : '127.0.0.1:' + nodes[0].address().port))
  } else {
    const d = new DHT({ bootstrap: a1.split(','), host: '127.0.0.1', ephemeral: false, firewalled: false })
    await d.fullyBootstrapped()
    nodes = [d]
    console.log('bootstrap ' + a1.split(',')[0])
  }
  const dht = nodes[nodes.length - 1]
  console.log('ready ' + nodes.map(n => '127.0.0.1:' + n.address().port).join(','))

  async function raw (to, cmd, target, value, token) {
    try {
      let tok = null
      if (token) {
        const r = await dht.request({ command: 3, target, value: null }, to)
        tok = r.token
      }
      const res = await dht.request({ command: cmd, target, value, token: tok }, to, { retry: false })
      return `raw ${res.error} ${res.value ? hex(res.value) : 'null'}`
    } catch (err) {
      return 'raw timeout'
    }
  }

  const handlers = {
    async announce (topic, seed) {
      await dht.announce(unhex(topic), kp(seed), []).finished()
      return 'announced'
    },
    async unannounce (topic, seed) {
      await dht.unannounce(unhex(topic), kp(seed))
      return 'unannounced'
    },
    async lookup (topic) {
      const pks = new Set()
      for await (const r of dht.lookup(unhex(topic))) for (const p of r.peers) pks.add(hex(p.publicKey))
      return 'lookup ' + ([...pks].join(',') || '-')
    },
    async findpeer (pk) {
      const pks = new Set()
      for await (const r of dht.findPeer(unhex(pk))) pks.add(hex(r.peer.publicKey))
      return 'findpeer ' + ([...pks].join(',') || '-')
    },
    async mput (seed, seq, value) {
      await dht.mutablePut(kp(seed), unhex(value), { seq: Number(seq) })
      return 'mput ok'
    },
    async mget (pk, seq, first) {
      const r = await dht.mutableGet(unhex(pk), { seq: Number(seq), latest: first !== 'first' })
      return r ? `mget ${r.seq} ${hex(r.value)}` : 'mget null'
    },
    async iput (value) {
      const r = await dht.immutablePut(unhex(value))
      return 'iput ' + hex(r.hash)
    },
    async iget (h) {
      const r = await dht.immutableGet(unhex(h))
      return r ? 'iget ' + hex(r.value) : 'iget null'
    },
    async raw (cmd, to, target, value, notoken) {
      return raw(parse(to), Number(cmd), unhex(target), value === '-' ? null : unhex(value), notoken !== 'notoken')
    },
    async rawmput (to, seed, seq, value) {
      const k = kp(seed)
      const v = unhex(value)
      const signature = Persistent.signMutable(Number(seq), v, k)
      const enc = c.encode(m.mutablePutRequest, { publicKey: k.publicKey, seq: Number(seq), value: v, signature })
      return raw(parse(to), 6, DHT.hash(k.publicKey), enc, true)
    },
    async bench (topic, count) {
      const t = unhex(topic)
      const start = process.hrtime.bigint()
      for (let i = 0; i < Number(count); i++) {
        for await (const r of dht.lookup(t)) void r // eslint-disable-line
      }
      return 'bench ' + (Number(process.hrtime.bigint() - start) / 1e6 / Number(count)).toFixed(3)
    },
    async stored () {
      let rec = 0; let mu = 0; let im = 0
      for (const n of nodes) {
        if (!n._persistent) continue
        rec += n._persistent.records.size
        mu += n._persistent.mutables.size
        im += n._persistent.immutables.size
      }
      return `stored ${rec} ${mu} ${im}`
    }
  }

  const rl = readline.createInterface({ input: process.stdin })
  let chain = Promise.resolve()
  rl.on('line', (line) => {
    const [cmd, ...args] = line.trim().split(/\s+/)
    console.error('cmd ' + line)
    if (!cmd) return
    chain = chain.then(async () => {
      const h = handlers[cmd]
      if (!h) return console.log('error unknown command ' + cmd)
      try {
        console.log(await h(...args))
      } catch (err) {
        console.log('error ' + cmd + ' ' + err.message)
      }
    })
  })
  rl.on('close', async () => {
    await chain
    for (let i = nodes.length - 1; i >= 0; i--) await nodes[i].destroy()
    process.exit(0)
  })
}

main().catch((err) => { console.error(err); process.exit(1) })
