// Node peers for natlab's hyperdht smoke test. Run with interop/ as the
// working directory so require() finds the pinned hyperdht.
//   node hyperdht.js testnet <host> <port> <size>   DHT nodes, prints "ready"
//   node hyperdht.js server <host> <port>           prints "key <hex>", echoes
//   node hyperdht.js client <host> <port> <hex>     prints "echo <msg> <ip:port>"
const path = require('path')
const mod = (m) => require(path.join(process.cwd(), 'node_modules', m))
const DHT = mod('hyperdht')
const createTestnet = mod('hyperdht/testnet')

const [role, host, port, arg] = process.argv.slice(2)
const bootstrap = [{ host, port: +port }]

async function main () {
  if (role === 'testnet') {
    await createTestnet(+arg, { host, port: +port })
    console.log('ready')
    return
  }
  const dht = new DHT({ bootstrap })
  if (role === 'server') {
    const server = dht.createServer((conn) => {
      conn.on('error', () => {})
      conn.pipe(conn)
    })
    await server.listen()
    console.log('key ' + server.publicKey.toString('hex'))
    return
  }
  if (role === 'client') {
    const conn = dht.connect(Buffer.from(arg, 'hex'))
    conn.on('error', (err) => { console.log('error ' + err.message); process.exit(1) })
    conn.once('open', () => conn.write('hello'))
    conn.once('data', (d) => {
      const raw = conn.rawStream
      console.log('echo ' + d.toString() + ' ' + raw.remoteHost + ':' + raw.remotePort)
      console.log('punches ' + JSON.stringify(dht.stats.punches))
      process.exit(0)
    })
    return
  }
  throw new Error('unknown role ' + role)
}

main().catch((err) => { console.log('error ' + err.stack); process.exit(1) })
