package session

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// benchSession is a reconnecting session with an in-process hostfs
// server (bufconn), a mount of its export and a file of 8 KiB open.
func benchSession(b *testing.B) (s *Session, mount, handle uint64) {
	b.Helper()
	export := b.TempDir()
	if err := os.WriteFile(filepath.Join(export, "f"), make([]byte, 8192), 0o644); err != nil {
		b.Fatal(err)
	}
	srv, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: export}}, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	cc := buftest.Serve(b, srv.ServerOptions(), srv.Register).Dial(b)
	s, err = New(context.Background(), cc, "bench", zap.NewNop(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	o := CallOptions{Timeout: 10 * time.Second}
	mr, e := Call(context.Background(), s, "Mount", qtfsv1.FileSystemClient.Mount,
		&qtfsv1.MountRequest{Path: []byte(export), Caller: &qtfsv1.Caller{}}, o)
	if e != 0 {
		b.Fatal(e)
	}
	or, e := Call(context.Background(), s, "Open", qtfsv1.FileSystemClient.Open,
		&qtfsv1.OpenRequest{Mount: mr.GetMount(), Caller: &qtfsv1.Caller{}, Path: []byte("f"), Flags: syscall.O_RDONLY}, o)
	if e != 0 {
		b.Fatal(e)
	}
	return s, mr.GetMount(), or.GetHandle()
}

// BenchmarkCall is the cost of a small call through the runtime (ids
// translated, the reply recorded) on top of the call stream: a Getattr of
// the mount root, a 4 KiB Read through a handle, and Getattrs from
// parallel callers (genMu read-held by each).
func BenchmarkCall(b *testing.B) {
	s, mount, h := benchSession(b)
	o := CallOptions{Timeout: 10 * time.Second}
	b.Run("getattr", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, e := Call(context.Background(), s, "Getattr", qtfsv1.FileSystemClient.Getattr,
				&qtfsv1.GetattrRequest{Mount: mount, Caller: &qtfsv1.Caller{}}, o); e != 0 {
				b.Fatal(e)
			}
		}
	})
	b.Run("read4k", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, e := Call(context.Background(), s, "Read", qtfsv1.FileSystemClient.Read,
				&qtfsv1.ReadRequest{Handle: h, Size: 4096}, o); e != 0 {
				b.Fatal(e)
			}
		}
	})
	b.Run("getattr-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, e := Call(context.Background(), s, "Getattr", qtfsv1.FileSystemClient.Getattr,
					&qtfsv1.GetattrRequest{Mount: mount, Caller: &qtfsv1.Caller{}}, o); e != 0 {
					b.Error(e)
					return
				}
			}
		})
	})
}
