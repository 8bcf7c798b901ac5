// Preload (node --require) for hypertele in a NAT lab: hypertele takes
// its bootstrap only as a port on 127.0.0.1 (--bootstrap PORT), and the
// lab's DHT is elsewhere. With LAB_BOOTSTRAP=host:port set, a dht-rpc
// bootstrap entry 127.0.0.1:<that port> becomes host:port, so hyperdht
// reaches the lab's bootstrap node directly.
//
// Why not forward 127.0.0.1:PORT there with DNAT (as bench WAN did): the
// peer then reaches the bootstrap node over two flows from one socket,
// through 127.0.0.1 and directly (the node's own address comes back in
// replies), and the kernel's NAT gives the second of them another source
// port. The bootstrap node then relays PEER_HANDSHAKEs with an address
// that does not reach the peer, and connections relayed through it fail
// (HOLEPUNCH_ABORTED after 10 s, or ETIMEDOUT): the "closed at once"
// downloads hypertele's client had in the WAN benchmark.
const path = require('path')
const RPC = require(path.join(__dirname, 'node_modules', 'dht-rpc'))

const lab = process.env.LAB_BOOTSTRAP
if (lab) {
  const i = lab.lastIndexOf(':')
  const host = lab.slice(0, i)
  const port = Number(lab.slice(i + 1))
  const rewrite = (n) => (n && n.host === '127.0.0.1' && n.port === port) ? { ...n, host } : n
  // dht-rpc's constructor assigns this.bootstrapNodes once; catch it.
  Object.defineProperty(RPC.prototype, 'bootstrapNodes', {
    configurable: true,
    get () { return this._labBootstrapNodes },
    set (v) { this._labBootstrapNodes = Array.isArray(v) ? v.map(rewrite) : v }
  })
}
