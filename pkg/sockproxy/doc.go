// Package sockproxy carries unix socket connections between the DPU and
// the host: the qtfs.v1 SocketProxy service on the host (Server) and the
// listening end on the DPU (Proxy). An unmodified client inside the DPU's
// chroot (dockerd, kubelet, ctr) connects to a unix socket there; each of
// its connections becomes one Connect stream, and the server connects to
// an allow-listed unix socket of the host (containerd.sock, the CRI
// socket) and forwards bytes both ways.
//
// The stream of one connection: the client sends SocketOpen naming the
// host path; the server answers SocketConnected or a final SocketError;
// then both sides send data and, at EOF, close_write, which the other end
// turns into shutdown(SHUT_WR) on its unix connection, so protocols that
// half-close (an HTTP client that closes its write side, a tar stream)
// work. The stream ends once both directions are closed. A host-side
// failure ends it with a SocketError the DPU logs before closing its
// connection; a DPU-side failure cancels the stream, which closes the host
// connection.
//
// Invariants:
//   - The server connects only to paths on its allow-list: the request
//     path, absolute and clean, with symlinks resolved, must equal an
//     allow-list entry resolved the same way (at every request, so a
//     socket that appears later, or moves behind a symlink, is followed).
//     A refusal is a SocketError with EACCES that names the allow-list,
//     logged at warn and counted.
//   - File descriptors cannot cross: both ends read their unix connection
//     with recvmsg(2) and a control buffer. Descriptors that arrive
//     (SCM_RIGHTS) are closed at once, the event is logged as an error
//     that says so, and the connection is closed (on the host side with a
//     SocketError EPROTO the DPU logs).
//   - Memory is bounded per connection: each direction holds at most one
//     chunk (ChunkSize) between its read and its write; a slow reader
//     stops the writer through gRPC flow control and the socket buffers.
//   - Connections are bounded in number on both sides (MaxConns); beyond
//     that the server answers RESOURCE_EXHAUSTED and the DPU closes the
//     new connection.
//   - Metrics never carry a path in a label: qtfs_sockproxy_* on the host,
//     qtfs_client_sockproxy_* on the DPU.
//
// Lock order: Server has no lock. Proxy.mu guards its set of live
// connections and is a leaf. Each connection has one sender per stream
// direction, so no stream lock is needed.
package sockproxy
