// Prints compact-encoding (and compact-encoding-net) encodings of a fixed set
// of values, one "name hex" line each, for internal/compact's vector test;
// and, given seeds as arguments, hypercore-crypto key pairs with their z32
// form for internal/key's test ("key seedhex pkhex skhex z32").
const c = require('compact-encoding')
const net = require('compact-encoding-net')
const crypto = require('hypercore-crypto')
const id = require('hypercore-id-encoding')

const out = (name, enc, v) => console.log(name + ' ' + Buffer.from(c.encode(enc, v)).toString('hex'))

for (const n of [0, 1, 0xfc, 0xfd, 0xfe, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff, 0x100000000, 2 ** 53 - 1]) out('uint:' + n, c.uint, n)
for (const n of [0, 1, -1, 2, -2, 126, -127, 100000, -100000, 2 ** 40, -(2 ** 40)]) out('int:' + n, c.int, n)
for (const n of [0, 0xff]) out('uint8:' + n, c.uint8, n)
for (const n of [0, 0x1234, 0xffff]) out('uint16:' + n, c.uint16, n)
for (const n of [0, 0x123456]) out('uint24:' + n, c.uint24, n)
for (const n of [0, 0x12345678]) out('uint32:' + n, c.uint32, n)
for (const n of [0, 2 ** 52 + 3]) out('uint64:' + n, c.uint64, n)
for (const f of [0, 1.5, -2.25]) out('float64:' + f, c.float64, f)
out('bool:true', c.bool, true)
out('bool:false', c.bool, false)
for (const s of ['', 'hi', 'héllo wörld', 'x'.repeat(300)]) out('string:' + s, c.string, s)
for (const h of ['', '00', 'deadbeef', 'ab'.repeat(300)]) out('buffer:' + h, c.buffer, Buffer.from(h, 'hex'))
out('fixed32', c.fixed32, Buffer.alloc(32, 7))
out('fixed64', c.fixed64, Buffer.alloc(64, 9))
out('array-uint', c.array(c.uint), [1, 300, 70000])
for (const a of [{ host: '127.0.0.1', port: 49737 }, { host: '10.1.2.3', port: 1 }]) {
  out('ipv4Address:' + a.host + ':' + a.port, net.ipv4Address, a)
  out('ipAddress:' + a.host + ':' + a.port, net.ipAddress, a)
}
for (const a of [{ host: '::1', port: 8080 }, { host: '2001:db8::ff00:42:8329', port: 65535 }]) {
  out('ipv6Address:[' + a.host + ']:' + a.port, net.ipv6Address, a)
  out('ipAddress:[' + a.host + ']:' + a.port, net.ipAddress, a)
}

for (const seedHex of process.argv.slice(2)) {
  const kp = crypto.keyPair(Buffer.from(seedHex, 'hex'))
  console.log('key ' + seedHex + ' ' + kp.publicKey.toString('hex') + ' ' + kp.secretKey.toString('hex') + ' ' + id.encode(kp.publicKey))
}
console.log('done')
