// Package transport carries qtfs's gRPC connections: it parses transport
// URIs, listens and dials by URI, authenticates peers, and holds the gRPC
// options both sides share.
//
// Three transports exist, named by URI:
//
//	tcp://HOST:PORT    TLS 1.3 with client certificates (mutual TLS), or plain
//	                   TCP when Security.Insecure says so explicitly
//	unix:///PATH       a unix socket; peers are checked by SO_PEERCRED uid
//	vsock://CID:PORT   AF_VSOCK; peers are checked by context id
//
// A bare "host" or "host:port" means tcp; the port defaults to DefaultPort.
//
// A server builds one grpc.Server with one ServerCredentials object and
// serves every listener from Listen on it. That object looks at each
// accepted connection: a TCP connection gets TLS (or nothing, when
// Insecure), a unix connection gets its peer uid checked, a vsock
// connection its peer CID. PeerIdentity turns the resulting AuthInfo into a
// short string for logs. A client calls Dial, which returns only once the
// first connection is ready (or with an error naming the URI and the
// reason); later reconnects are gRPC's.
//
// Call channels (pkg/callstream) share the listener: SplitChannels wraps it
// and looks at the first bytes of each connection. A client's DialChannel
// sends ChannelMagic in the clear first; such a connection goes through the
// same security handshake (TLS negotiating ChannelALPN instead of "h2") and
// then to a ChannelHandler, every other connection to gRPC with its first
// bytes put back. PeerPrincipal names a peer without its address, so that
// the server can check that a channel comes from the client of the gRPC
// connection it asks to be bound to.
//
// Bulk data: both sides take gRPC's frame and message buffers from one
// pool (MessageBuffers) whose tiers fit the data parts and whose buffers are
// not zeroed (every user writes a buffer before reading it). An AliasCodec
// decodes a large message of one type with its bytes left in the received
// buffer, which its user takes (Take) and frees once done with the bytes;
// its encoder hook lets a server send a reply's bytes from a buffer of its
// own without copying them into the encoded message. Under TLS, the records
// of one Write leave in one write(2) (batch.go).
//
// Invariants:
//   - Plain TCP without TLS happens only with Security.Insecure on both
//     sides, and only on loopback unless InsecureNonLoopback is set too;
//     Validate refuses anything else, Listen and Dial call Validate, and the
//     handshakes check the peer address again.
//   - TLS is 1.3 or later. A server with TLS always requires and verifies
//     client certificates against CAFile.
//   - A connection whose kind the server cannot tell (not tcp, unix or
//     vsock), or whose peer cannot be checked, is refused: the credentials
//     fail closed.
//   - A refused connection is closed by the credentials, gracefully (the
//     peer reads our TLS alert, or EOF, rather than a reset), never by gRPC:
//     ServerHandshake hands it back as credentials.ErrConnDispatched.
//   - Listen never removes a file that is not a socket, nor a socket that
//     a live server still answers on.
//   - A call channel gets exactly the checks a gRPC connection gets; a
//     connection that sends nothing in its first seconds is dropped
//     without holding up the others.
//   - Every handshake refusal on the server is logged (when a logger is
//     given) and counted (when a Registerer is given); no metric label holds
//     an address or a path.
//
// Lock order: batchedTLS.wmu → (crypto/tls's own) → batchSocket.mu, which
// is held while writing to the socket; dialState.mu (the last error seen
// while Dial waits for its first connection) and BufferTable.mu are
// leaves.
package transport
