package fuseclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// TestDataPartsWithHostfs writes and reads a file in parts over gRPC to a
// hostfs server: the data arrives intact, a read's parts alias the
// buffers their replies came in, and those are handed back once the
// result is done.
func TestDataPartsWithHostfs(t *testing.T) {
	export := t.TempDir()
	srv, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: export}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cc := buftest.Serve(t, srv.ServerOptions(), srv.Register).Dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := session.New(ctx, cc, "fuseclient-test", zaptest.NewLogger(t), session.Options{})
	if err != nil {
		t.Fatal(err)
	}
	caller := &qtfsv1.Caller{Pid: 1}
	mr, e := session.Call(context.Background(), s, "Mount", qtfsv1.FileSystemClient.Mount, &qtfsv1.MountRequest{Path: []byte(export), Caller: caller}, session.CallOptions{Timeout: 10 * time.Second})
	if e != 0 {
		t.Fatalf("mount: %v", e)
	}
	if err := os.WriteFile(filepath.Join(export, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	or, e := session.Call(context.Background(), s, "Open", qtfsv1.FileSystemClient.Open,
		&qtfsv1.OpenRequest{Mount: mr.GetMount(), Caller: caller, Path: []byte("f"), Flags: syscall.O_RDWR}, session.CallOptions{Timeout: 10 * time.Second})
	if e != 0 {
		t.Fatalf("open: %v", e)
	}
	m := &mountFS{sess: s, log: zaptest.NewLogger(t), timeout: 10 * time.Second}
	f := &fileHandle{m: m, h: or.GetHandle(), flags: syscall.O_RDWR}

	data := make([]byte, 4*ioPart)
	rand.Read(data)
	if n, e := f.writeParts(ctx, data, 0, ioPart); e != 0 || int(n) != len(data) {
		t.Fatalf("writeParts: %d, %v", n, e)
	}
	if got, err := os.ReadFile(filepath.Join(export, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file after writeParts: %d bytes, %v (or different content)", len(got), err)
	}

	for _, tc := range []struct {
		name string
		off  int64
		want []byte
	}{
		{"whole", 0, data},
		{"short at the end", int64(len(data) - ioPart - 100), data[len(data)-ioPart-100:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, e := f.readParts(ctx, make([]byte, len(data)), tc.off, ioPart)
			if e != 0 {
				t.Fatal(e)
			}
			r := res.(*partsResult)
			if got, _ := r.Bytes(nil); !bytes.Equal(got, tc.want) || r.Size() != len(tc.want) {
				t.Fatalf("read %d bytes (size %d), want %d (or different content)", len(got), r.Size(), len(tc.want))
			}
			slices, _ := r.Slices()
			for i, p := range slices {
				if len(p) >= session.AliasMin && r.bufs[i] == nil {
					t.Errorf("part %d (%d bytes) was copied out of its reply", i, len(p))
				}
			}
			if n := s.ReadBuffersHeld(); n != 0 {
				t.Errorf("%d reply buffers left untaken", n)
			}
			r.Done()
			for i, b := range r.bufs {
				if b != nil {
					t.Errorf("buffer of part %d not handed back by Done", i)
				}
			}
		})
	}
}
