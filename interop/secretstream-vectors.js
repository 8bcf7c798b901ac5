// Transcript generator/checker for keytunnel's crypto_secretstream tests
// (secretstream/vectors_test.go), using sodium-native directly.
//
//   node secretstream-vectors.js push
//     prints one line "transcript JSON": {key, header, ops}, where ops are
//     {m, tag, c} (hex plaintext, tag number, hex ciphertext) or
//     {rekey: true} (an explicit crypto_secretstream_..._rekey call).
//   node secretstream-vectors.js pull
//     reads one line "transcript JSON" from stdin ({key, header, ops} with
//     {c} or {rekey}), decrypts it with sodium and prints
//     "result JSON": [{m, tag}] or [{error}] for the first failure.
const sodium = require('sodium-native')
const readline = require('readline')

const S = sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES
const A = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
const tagNum = (t) => (typeof t === 'number' ? t : t[0])
const TAGS = [
  sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
  sodium.crypto_secretstream_xchacha20poly1305_TAG_PUSH,
  sodium.crypto_secretstream_xchacha20poly1305_TAG_REKEY,
  sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
].map(tagNum)

function push () {
  const key = Buffer.alloc(32)
  sodium.randombytes_buf(key)
  const header = Buffer.alloc(24)
  const state = Buffer.alloc(S)
  sodium.crypto_secretstream_xchacha20poly1305_init_push(state, header, key)
  const ops = []
  const sizes = [0, 1, 5, 15, 16, 17, 31, 32, 63, 64, 65, 100, 127, 128, 129, 1000, 4096, 65536, 70001]
  sizes.forEach((n, i) => {
    const m = Buffer.alloc(n)
    sodium.randombytes_buf(m)
    const tag = TAGS[i % 4]
    const c = Buffer.alloc(n + A)
    sodium.crypto_secretstream_xchacha20poly1305_push(state, c, m, null, tag)
    ops.push({ m: m.toString('hex'), tag, c: c.toString('hex') })
    if (i === 6) {
      sodium.crypto_secretstream_xchacha20poly1305_rekey(state)
      ops.push({ rekey: true })
    }
  })
  console.log('transcript ' + JSON.stringify({ key: key.toString('hex'), header: header.toString('hex'), ops }))
}

function pull (t) {
  const state = Buffer.alloc(S)
  sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, Buffer.from(t.header, 'hex'), Buffer.from(t.key, 'hex'))
  const out = []
  for (const op of t.ops) {
    if (op.rekey) {
      sodium.crypto_secretstream_xchacha20poly1305_rekey(state)
      continue
    }
    const c = Buffer.from(op.c, 'hex')
    const m = Buffer.alloc(c.byteLength - A)
    const tag = Buffer.alloc(1)
    try {
      sodium.crypto_secretstream_xchacha20poly1305_pull(state, m, tag, c, null)
    } catch (err) {
      out.push({ error: err.message })
      break
    }
    out.push({ m: m.toString('hex'), tag: tag[0] })
  }
  console.log('result ' + JSON.stringify(out))
}

if (process.argv[2] === 'push') {
  push()
} else {
  const rl = readline.createInterface({ input: process.stdin })
  rl.once('line', (l) => {
    pull(JSON.parse(l.replace(/^transcript /, '')))
    rl.close()
  })
}
