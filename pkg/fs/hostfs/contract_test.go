package hostfs_test

import (
	"context"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/qtfs/qtfs/pkg/fs/contract"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// newServer starts a hostfs.Server over exports with a test logger and a
// private registry; it is closed, and checked for leaked handles, at cleanup.
func newServer(t *testing.T, exports []contract.Export) (*hostfs.Server, *prometheus.Registry) {
	t.Helper()
	var ex []hostfs.Export
	for _, e := range exports {
		ex = append(ex, hostfs.Export{Path: e.Path, ReadOnly: e.ReadOnly})
	}
	reg := prometheus.NewRegistry()
	s, err := hostfs.New(hostfs.Options{
		Exports:    ex,
		Logger:     zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		Registerer: reg,
		ServerName: "qtfs-server test",
	})
	if err != nil {
		t.Fatalf("hostfs.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := s.OpenHandles(); n != 0 {
			t.Errorf("%d handles open after Close", n)
		}
		if n := s.Sessions(); n != 0 {
			t.Errorf("%d sessions live after Close", n)
		}
	})
	return s, reg
}

// startDirect serves through in-process DirectClients.
func startDirect(t *testing.T, exports []contract.Export) contract.Server {
	s, _ := newServer(t, exports)
	return contract.Server{
		Dial: func(t *testing.T) (qtfsv1.FileSystemClient, func()) {
			c := s.DirectClient()
			return c, func() { _ = c.Close() }
		},
		OpenHandles: s.OpenHandles,
		Sessions:    s.Sessions,
	}
}

// startGRPC serves through a real grpc.Server over an in-memory listener.
func startGRPC(t *testing.T, exports []contract.Export) contract.Server {
	s, _ := newServer(t, exports)
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer(s.ServerOptions()...)
	s.Register(g)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-served
	})
	return contract.Server{
		Dial: func(t *testing.T) (qtfsv1.FileSystemClient, func()) {
			cc, err := grpc.NewClient("passthrough:///bufconn",
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
			if err != nil {
				t.Fatalf("grpc.NewClient: %v", err)
			}
			return qtfsv1.NewFileSystemClient(cc), func() { _ = cc.Close() }
		},
		OpenHandles: s.OpenHandles,
		Sessions:    s.Sessions,
	}
}

func TestContract(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start contract.Factory
	}{
		{"direct", startDirect},
		{"grpc", startGRPC},
	} {
		t.Run(tc.name, func(t *testing.T) { contract.Run(t, tc.start) })
	}
}
