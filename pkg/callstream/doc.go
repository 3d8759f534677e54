// Package callstream carries the unary calls of a gRPC service over one
// long-lived bidirectional stream (qtfs.v1.FileSystem/Calls), so that a
// small call costs one message each way instead of an HTTP/2 stream of its
// own (HEADERS, DATA and trailers, stream set-up and tear-down on both
// sides): on a loopback connection that is most of a small call's time and
// CPU.
//
// The frames travel on one of two carriers. A Calls stream is a stream of
// the gRPC connection itself, which multiplexes any number of calls. A
// call channel is a connection of its own, opened beside the gRPC
// connection to the same server address and bound to its session with
// the token of the session's handshake (see ChannelHello in the proto and
// transport.SplitChannels): frames are length-prefixed protobuf written
// straight to the socket, and a channel carries one call at a time. The
// client keeps a small pool of channels; a call takes an idle one, writes
// its request and reads its reply on its own goroutine, and the server
// runs it on the goroutine that read it and writes the reply from there.
// No goroutine hands a frame to another on either side: each hand-off
// wakes a thread, which on a loaded machine with few cores is most of a
// small call's latency (BenchmarkCallCarriers). Calls beyond the pool at
// once, and all calls when no channel can be opened (an older server, a
// refusal), go on a stream.
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
// and the server is told to cancel the call (a cancel frame on a stream;
// on a channel, the channel's closing).
//
// Server runs the frames of a stream concurrently (at most MaxInflight at
// a time; the reader waits beyond that, which pushes back on the client
// through flow control), and those of a channel one after the other on
// its reading goroutine, through the service's generated method handlers
// and the unary interceptor the server uses for plain calls, under the
// connection's context (so the session, peer and tags are the same as
// for a unary call) with the call's own deadline and cancellation.
// Replies on a stream are sent in completion order. The methods whose
// calls may wait for something outside the server are declared to the
// Server (ServerOptions.Blocking): while such a call runs on a channel,
// the server watches the channel, so that the client giving up still
// ends it; every other call on a channel runs without the watch.
//
// Lock order: Client.mu before stream.mu; stream.sendMu and Client.poolMu
// are taken alone.
package callstream
