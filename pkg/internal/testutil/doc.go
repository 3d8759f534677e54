// Package testutil holds the small helpers the tests of several packages
// share: skipping when a FUSE mount is impossible, polling for a condition
// with a deadline, and picking a free TCP address.
//
// The helpers take testing.TB, so benchmarks use them too. They hold no
// state between calls.
package testutil
