// Command loopback-nopt is go-fuse's loopback filesystem with FUSE
// passthrough turned off, for the benchmark.
//
// go-fuse's loopback example, run as root on a kernel with FUSE passthrough
// (6.9 and later), hands every open file to the kernel (FOPEN_PASSTHROUGH):
// reads and writes then never reach the daemon, so it measures the kernel,
// not a FUSE round trip. This program serves the same loopback nodes with
// the same options as the example (1 s entry and attribute timeouts, direct
// mount), but its file handles do not offer a passthrough fd, so every read
// and write is a FUSE request answered in user space: the local ceiling for
// a FUSE filesystem that has to move data through its daemon, as every
// network filesystem does.
//
// Usage: loopback-nopt MOUNTPOINT ORIGINAL. SIGTERM or SIGINT unmounts.
// Invariants: none beyond go-fuse's. Lock order: none of its own.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// file is what a loopback file handle does, without PassthroughFd.
type file interface {
	fs.FileReader
	fs.FileWriter
	fs.FileFlusher
	fs.FileFsyncer
	fs.FileReleaser
	fs.FileGetattrer
	fs.FileSetattrer
	fs.FileLseeker
	fs.FileAllocater
	fs.FileGetlker
	fs.FileSetlker
	fs.FileSetlkwer
}

// plainFile embeds the interface, not the concrete handle, so only the
// methods above are visible to go-fuse.
type plainFile struct{ file }

func hide(fh fs.FileHandle) fs.FileHandle {
	if f, ok := fh.(file); ok {
		return &plainFile{f}
	}
	return fh
}

// node is a loopback node whose opened files are plain files.
type node struct{ *fs.LoopbackNode }

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
)

func (n *node) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	if ln, ok := ops.(*fs.LoopbackNode); ok {
		return &node{ln}
	}
	return ops
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return hide(fh), fl, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, hide(fh), fl, errno
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: loopback-nopt MOUNTPOINT ORIGINAL")
		return 2
	}
	rn, err := fs.NewLoopbackRoot(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loopback-nopt:", err)
		return 1
	}
	ln, ok := rn.(*fs.LoopbackNode)
	if !ok {
		fmt.Fprintf(os.Stderr, "loopback-nopt: unexpected root node %T\n", rn)
		return 1
	}
	root := &node{ln}
	ln.RootData.RootNode = root
	sec := time.Second
	server, err := fs.Mount(args[0], root, &fs.Options{
		AttrTimeout:     &sec,
		EntryTimeout:    &sec,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			DirectMount: true,
			FsName:      args[1],
			Name:        "loopback-nopt",
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "loopback-nopt: mount:", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		_ = server.Unmount()
	}()
	server.Wait()
	return 0
}
