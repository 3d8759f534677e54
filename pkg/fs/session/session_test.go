package session

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func TestSessionWithHostfs(t *testing.T) {
	export := t.TempDir()
	srv, err := hostfs.New(hostfs.Options{
		Exports:    []hostfs.Export{{Path: export, ReadOnly: true}},
		Logger:     zaptest.NewLogger(t).Named("hostfs"),
		ServerName: "hostfs-test 1",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cc := buftest.Serve(t, srv.ServerOptions(), srv.Register).Dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(ctx, cc, "session-test", zaptest.NewLogger(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.ServerName() != "hostfs-test 1" {
		t.Errorf("ServerName = %q", s.ServerName())
	}
	ex := s.Exports()
	if len(ex) != 1 || string(ex[0].GetPath()) != export || !ex[0].GetReadOnly() {
		t.Errorf("Exports = %v, want %s read-only", ex, export)
	}
	ex[0].Path = []byte("/changed")
	if string(s.Exports()[0].GetPath()) != export {
		t.Error("Exports returned the session's own messages")
	}
	for _, f := range []qtfsv1.Feature{qtfsv1.Feature_FEATURE_READDIR_PLUS, qtfsv1.Feature_FEATURE_LOCKS} {
		if !s.HasFeature(f) {
			t.Errorf("feature %v not recorded", f)
		}
	}
	if s.chunk != MaxChunk {
		t.Errorf("chunk %d, want %d", s.chunk, MaxChunk)
	}
	if rtt, err := s.Ping(ctx); err != nil || rtt <= 0 {
		t.Errorf("Ping before any mount = %v, %v", rtt, err)
	}
	reg := prometheus.NewRegistry()
	if err := s.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterMetrics(reg); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
}

// fakeHandshake answers Handshake with a fixed reply or error.
type fakeHandshake struct {
	qtfsv1.UnimplementedFileSystemServer
	resp *qtfsv1.HandshakeResponse
	err  error
}

func (f *fakeHandshake) Handshake(context.Context, *qtfsv1.HandshakeRequest) (*qtfsv1.HandshakeResponse, error) {
	return f.resp, f.err
}

func TestNewSessionRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		fake *fakeHandshake
		want string
	}{
		{"newer protocol", &fakeHandshake{resp: &qtfsv1.HandshakeResponse{ProtocolVersion: 2, Server: "future"}}, "protocol version 2"},
		{"no protocol", &fakeHandshake{resp: &qtfsv1.HandshakeResponse{Server: "zero"}}, "protocol version 0"},
		{"tiny messages", &fakeHandshake{resp: &qtfsv1.HandshakeResponse{ProtocolVersion: 1, MaxMessageBytes: 5000}}, "too small"},
		{"refused", &fakeHandshake{err: status.Error(codes.PermissionDenied, "go away")}, "go away"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := buftest.Serve(t, nil, func(g *grpc.Server) { qtfsv1.RegisterFileSystemServer(g, tc.fake) }).Dial(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := New(ctx, cc, "session-test", zaptest.NewLogger(t), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "handshake: ") {
				t.Errorf("NewSession error %v, want one with %q", err, tc.want)
			}
		})
	}
}

func TestSessionChunk(t *testing.T) {
	cc := buftest.Serve(t, nil, func(g *grpc.Server) {
		qtfsv1.RegisterFileSystemServer(g, &fakeHandshake{resp: &qtfsv1.HandshakeResponse{ProtocolVersion: 1, MaxMessageBytes: 256 << 10}})
	}).Dial(t)
	s, err := New(context.Background(), cc, "session-test", zaptest.NewLogger(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := 256<<10 - messageMargin; s.chunk != want {
		t.Errorf("chunk %d, want %d", s.chunk, want)
	}
	// A gRPC status (here UNIMPLEMENTED) is a failed ping.
	if _, err := s.Ping(context.Background()); err == nil {
		t.Error("Ping against a server without Getattr succeeded")
	}
}
