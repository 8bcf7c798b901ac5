// Reads lines from stdin and answers with the reference's data structures,
// for dht/rpc's unit tests:
//   table <localid> <k> <id,id,...> <target>   → "closest id,id,..." (kademlia-routing-table:
//                                                 add all ids in order, then closest(target))
//   nat <host:port,host:port,...>              → "nat <host|null> <port>" after adding each (nat-sampler)
const Table = require('kademlia-routing-table')
const NatSampler = require('nat-sampler')
const readline = require('readline')

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const [cmd, ...args] = line.trim().split(' ')
  if (cmd === 'table') {
    const [local, k, ids, target] = args
    const t = new Table(Buffer.from(local, 'hex'), { k: Number(k) })
    let full = 0
    t.on('row', (row) => row.on('full', () => full++))
    for (const id of ids.split(',')) t.add({ id: Buffer.from(id, 'hex') })
    console.log('closest ' + t.closest(Buffer.from(target, 'hex')).map(n => n.id.toString('hex')).join(',') + ' ' + t.size + ' ' + full)
  } else if (cmd === 'nat') {
    const s = new NatSampler()
    const out = []
    for (const a of args[0].split(',')) {
      const [host, port] = a.split(':')
      s.add(host, Number(port))
      out.push(`${s.host}:${s.port}`)
    }
    console.log('nat ' + out.join(','))
  }
})
rl.on('close', () => process.exit(0))
