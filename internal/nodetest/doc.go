// Package nodetest starts the Node.js reference scripts in interop/ as child
// processes for keytunnel's interop tests, reads what they print line by
// line, and always kills them (and their children) when the test ends.
//
// Interop tests are required: under CI (CI=true) a missing node binary or a
// missing interop/node_modules fails the test; elsewhere the test is skipped
// with a message saying what to run.
package nodetest
