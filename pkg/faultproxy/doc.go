// Package faultproxy is a byte-level proxy for fault-injection tests: it
// sits between a client and a server (TCP or unix sockets) and, on
// command, cuts every connection (as a crashed peer or a reset would),
// stalls them (as a link that is down: bytes stop flowing in both
// directions, nothing is closed, TCP keeps the data queued), refuses new
// connections, or forwards normally again.
//
// A Proxy owns its listener and every connection it made; Close ends them
// all and waits for its goroutines.
//
// Invariants:
//   - While stalled, no byte is forwarded in either direction and no new
//     connection reaches the target; Resume lets the queued bytes through
//     in order. Nothing is lost or reordered by a stall.
//   - Cut closes both sides of every open connection at once; bytes not yet
//     forwarded are dropped, as they would be by a crash.
//   - Every goroutine the Proxy starts ends by Close.
//
// Lock order: Proxy.mu is the only lock; no I/O is done while it is held
// (the pumps only read the stall gate under it).
package faultproxy
