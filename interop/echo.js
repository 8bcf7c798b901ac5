// Self-test of the Go helper internal/nodetest: prints "ready", then echoes
// each line of standard input back prefixed with "echo ".
const readline = require('readline')
console.log('ready')
readline.createInterface({ input: process.stdin }).on('line', (l) => console.log('echo ' + l))
