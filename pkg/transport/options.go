package transport

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// MaxMessageBytes is the largest gRPC message either side sends or accepts
// (8 MiB): a 1 MiB data chunk, a large readdir reply, with room to spare.
const MaxMessageBytes = 8 << 20

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
// keepalive enforcement and probing, message size limits, the handshake
// timeout. Credentials are not among them: add
// grpc.Creds(ServerCredentials(...)).
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
	}
}
