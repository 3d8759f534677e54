package hostfs_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// TestStreamWaitCancelled: a read of a fifo with no data and a write to a
// full pipe wait on the server until their call is cancelled (the DPU
// caller was killed), then end with EINTR and leave the handle closable.
func TestStreamWaitCancelled(t *testing.T) {
	exp := t.TempDir()
	fifo := filepath.Join(exp, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// A peer holding the fifo open both ways, never reading or writing.
	peer, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	s := newEscapeServer(t, hostfs.Export{Path: exp})
	c, m := mountDirect(t, s, exp)
	bg := context.Background()
	open := func(flags uint32) uint64 {
		r, err := c.Open(bg, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("fifo"), Flags: flags})
		if err != nil || r.GetErrno() != 0 {
			t.Fatalf("open: %v %v", r, err)
		}
		return r.GetHandle()
	}
	rh, wh := open(unix.O_RDONLY), open(unix.O_WRONLY)
	// Fill the pipe (64 KiB by default).
	if n, err := unix.FcntlInt(peer.Fd(), unix.F_GETPIPE_SZ, 0); err != nil {
		t.Fatal(err)
	} else if _, err := peer.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) (int32, error)
	}{
		{"write to a full pipe", func(ctx context.Context) (int32, error) {
			r, err := c.Write(ctx, &qtfsv1.WriteRequest{Handle: wh, Data: []byte("more")})
			return r.GetErrno(), err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(bg)
			done := make(chan int32, 1)
			go func() { e, _ := tc.call(ctx); done <- e }()
			select {
			case e := <-done:
				t.Fatalf("ended before the cancel: %v", syscall.Errno(e))
			case <-time.After(300 * time.Millisecond):
			}
			cancel()
			select {
			case e := <-done:
				if syscall.Errno(e) != syscall.EINTR {
					t.Fatalf("errno %v, want EINTR", syscall.Errno(e))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the server kept waiting after the cancel")
			}
		})
	}
	// Drain the pipe: now a read waits for data.
	buf := make([]byte, 1<<20)
	pfd := int(peer.Fd()) // Fd makes the descriptor blocking: call it once
	unix.SetNonblock(pfd, true)
	for {
		if n, err := unix.Read(pfd, buf); n <= 0 || err != nil {
			break
		}
	}
	unix.SetNonblock(pfd, false)
	t.Run("read of an empty fifo", func(t *testing.T) {
		ctx, cancel := context.WithCancel(bg)
		done := make(chan int32, 1)
		go func() {
			r, _ := c.Read(ctx, &qtfsv1.ReadRequest{Handle: rh, Size: 10})
			done <- r.GetErrno()
		}()
		select {
		case e := <-done:
			t.Fatalf("ended before the cancel: %v", syscall.Errno(e))
		case <-time.After(300 * time.Millisecond):
		}
		cancel()
		select {
		case e := <-done:
			if syscall.Errno(e) != syscall.EINTR {
				t.Fatalf("errno %v, want EINTR", syscall.Errno(e))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server kept waiting after the cancel")
		}
		// Data that comes is read.
		peer.Write([]byte("hello"))
		r, err := c.Read(bg, &qtfsv1.ReadRequest{Handle: rh, Size: 10})
		if err != nil || string(r.GetData()) != "hello" {
			t.Fatalf("read after data came: %v %v", r, err)
		}
	})
	for _, h := range []uint64{rh, wh} {
		c.Release(bg, &qtfsv1.ReleaseRequest{Handle: h})
	}
	if n := s.OpenHandles(); n != 0 {
		t.Fatalf("%d handles open after release", n)
	}
}
