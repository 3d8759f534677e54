package transport

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
)

// MaxMessageBytes is the largest gRPC message either side sends or accepts
// (8 MiB): a 1 MiB data chunk, a large readdir reply, with room to spare.
const MaxMessageBytes = 8 << 20

// HTTP/2 flow control and socket buffering, the same on both sides.
//
// gRPC's defaults (64 KiB windows grown by a bandwidth estimator, 32 KiB
// buffers) cost a 1 MiB Read or Write several window-update round trips
// and a write(2) per 32 KiB. With a stream window that holds the largest
// message, a message never waits for the peer mid-way; the connection
// window lets several chunks be in flight at once. A peer can make the
// other buffer at most ConnWindowBytes of unread data per connection.
const (
	// StreamWindowBytes is the per-call window: the largest message.
	StreamWindowBytes = MaxMessageBytes
	// ConnWindowBytes is the per-connection window: 16 chunks of 1 MiB.
	ConnWindowBytes = 16 << 20
	// socketBufferBytes is gRPC's read and write buffer per connection:
	// a 1 MiB chunk leaves in four write(2)s, not thirty-two.
	socketBufferBytes = 256 << 10
)

// messageBufferSizes are the tiers of the pool gRPC takes message buffers
// from. gRPC's default tiers jump from 32 KiB to 1 MiB, so a message of a
// 256 KiB chunk (the part size of the client's large reads and writes)
// held a 1 MiB buffer, and a 1 MiB chunk with its few bytes of envelope
// none of the pool's; messageEnvelope leaves room for the envelope.
var messageBufferSizes = []int{256, 4 << 10, 16 << 10, 32 << 10,
	64<<10 + messageEnvelope, 256<<10 + messageEnvelope, 1<<20 + messageEnvelope}

// messageEnvelope is the room a data message needs beyond its data.
const messageEnvelope = 4 << 10

// messageBuffers is the pool both sides take message buffers from.
var messageBuffers = newBufferPool(messageBufferSizes...)

// MessageBuffers is the pool gRPC takes frame and message buffers from on
// both sides; codecs that keep a received message's buffer (AliasCodec)
// take theirs from it too.
func MessageBuffers() mem.BufferPool { return messageBuffers }

// Keepalive and handshake timing shared by both sides. A client pings an
// idle connection every ClientKeepaliveTime and drops it when no answer
// comes within KeepaliveTimeout; the server lets clients ping that often.
const (
	ClientKeepaliveTime = 20 * time.Second
	ServerKeepaliveTime = 30 * time.Second
	KeepaliveTimeout    = 10 * time.Second
	// minClientPing is the shortest ping interval the server tolerates
	// from a client; it must stay below ClientKeepaliveTime.
	minClientPing = 10 * time.Second
	// HandshakeTimeout bounds a server-side connection handshake (TLS or
	// the peer check), so a silent peer cannot hold a goroutine.
	HandshakeTimeout = 10 * time.Second
)

// ServerOptions are the gRPC server options every qtfs server uses:
// keepalive enforcement and probing, message size limits, flow-control
// windows and buffers, the handshake timeout. Credentials are not among
// them: add grpc.Creds(ServerCredentials(...)).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             minClientPing,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    ServerKeepaliveTime,
			Timeout: KeepaliveTimeout,
		}),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.ConnectionTimeout(HandshakeTimeout),
		grpc.InitialWindowSize(StreamWindowBytes),
		grpc.InitialConnWindowSize(ConnWindowBytes),
		grpc.WriteBufferSize(socketBufferBytes),
		grpc.ReadBufferSize(socketBufferBytes),
		experimental.BufferPool(messageBuffers),
	}
}

// clientOptions are the gRPC dial options Dial and NewClient put first.
func clientOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                ClientKeepaliveTime,
			Timeout:             KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
		),
		grpc.WithInitialWindowSize(StreamWindowBytes),
		grpc.WithInitialConnWindowSize(ConnWindowBytes),
		grpc.WithWriteBufferSize(socketBufferBytes),
		grpc.WithReadBufferSize(socketBufferBytes),
		experimental.WithBufferPool(messageBuffers),
	}
}
