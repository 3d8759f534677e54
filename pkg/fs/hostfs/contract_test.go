package hostfs_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"

	"github.com/qtfs/qtfs/pkg/fs/contract"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
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
	lis := buftest.Serve(t, s.ServerOptions(), s.Register)
	return contract.Server{
		Dial: func(t *testing.T) (qtfsv1.FileSystemClient, func()) {
			cc := lis.Dial(t, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
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
