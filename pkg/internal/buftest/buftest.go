// Package buftest serves gRPC services on an in-memory listener for tests:
// real gRPC (codecs, interceptors, flow control) without a socket.
package buftest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Listener is an in-memory listener a gRPC server serves on.
type Listener struct{ ln *bufconn.Listener }

// Serve serves the services register adds, on a server built with opts,
// until the test ends; the test's cleanup stops the server and waits for
// it.
func Serve(tb testing.TB, opts []grpc.ServerOption, register func(*grpc.Server)) *Listener {
	tb.Helper()
	ln := bufconn.Listen(1 << 20)
	g := grpc.NewServer(opts...)
	register(g)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = g.Serve(ln)
	}()
	tb.Cleanup(func() {
		g.Stop()
		<-served
	})
	return &Listener{ln: ln}
}

// Dial returns a new connection to the server, without transport
// security; the test's cleanup closes it.
func (l *Listener) Dial(tb testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient("passthrough:///bufconn", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)...)
	if err != nil {
		tb.Fatalf("grpc.NewClient: %v", err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}
