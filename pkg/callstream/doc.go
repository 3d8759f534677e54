// Package callstream carries the unary calls of a gRPC service over one
// long-lived bidirectional stream (qtfs.v1.FileSystem/Calls), so that a
// small call costs one message each way instead of an HTTP/2 stream of its
// own (HEADERS, DATA and trailers, stream set-up and tear-down on both
// sides): on a loopback connection that is most of a small call's time and
// CPU.
//
// The frames travel on one of two carriers. A Calls stream is a stream of
// the gRPC connection itself. A call channel is a connection of its own,
// opened beside the gRPC connection to the same server address and bound
// to its session with the token of the session's handshake (see
// ChannelHello in the proto and transport.SplitChannels): frames are
// length-prefixed protobuf written straight to the socket, so a call does
// not pass through HTTP/2 framing, flow control and the transport's writer
// goroutine on each side, which saves a goroutine hand-off, and on a busy
// machine a thread wake-up, each way. The client prefers a channel when it
// has a token and a way to dial one, and uses a stream when the channel
// cannot be opened (an older server, a refusal).
//
// Client implements grpc.ClientConnInterface: a generated client built on
// it sends each call as one CallFrame and waits for the CallFrame with the
// same id. Calls whose Direct function says so (bulk data) go as plain
// unary calls on the underlying connection instead, so that a large
// transfer never queues small calls behind it in the stream's flow
// control. The carrier is opened on first use and again after it fails;
// calls in flight when it fails get codes.Unavailable, as calls on a lost
// connection do, and the caller decides whether to send them again. A
// caller that gives up (context done) gets the context's status at once
// and the server is told to cancel the call.
//
// Server runs the frames of one stream or channel: each request
// concurrently (at most MaxInflight at a time; the reader waits beyond
// that, which pushes back on the client through flow control or the
// socket's buffer), through the service's
// generated method handlers and the unary interceptor the server uses for
// plain calls, under the stream's context (so the connection's session,
// peer and tags are the same as for a unary call) with the call's own
// deadline and cancellation. Replies are sent in completion order.
//
// Lock order: Client.mu before stream.mu; stream.sendMu is taken alone.
package callstream
