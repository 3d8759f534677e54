package hostfs

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// DirectClient is a qtfsv1.FileSystemClient that calls a Server in
// process, through the same interceptors (metrics, logs, panic recovery,
// limits) as gRPC calls. It is one session, as one connection would be: call
// Handshake first; Close ends the session and releases what it holds.
// Request messages are passed as they are: do not change one while a call
// that uses it runs.
type DirectClient struct {
	s  *Server
	cs *connState
}

var _ qtfsv1.FileSystemClient = (*DirectClient)(nil)

// DirectClient returns a new in-process client with its own session.
func (s *Server) DirectClient() *DirectClient {
	return &DirectClient{s: s, cs: s.newConn("direct")}
}

// Close ends the client's session.
func (c *DirectClient) Close() error {
	c.s.endConn(c.cs)
	return nil
}

// call runs handler h for method like a gRPC server would.
func call[Req, Resp any](c *DirectClient, ctx context.Context, method string, req *Req,
	h func(context.Context, *Req) (*Resp, error)) (*Resp, error) {
	info := &grpc.UnaryServerInfo{Server: c.s, FullMethod: method}
	out, err := c.s.intercept(withConn(ctx, c.cs), req, info, func(ctx context.Context, r any) (any, error) {
		return c.s.limit(ctx, r, info, func(ctx context.Context, r any) (any, error) {
			return h(ctx, r.(*Req))
		})
	})
	if err != nil {
		return nil, err
	}
	return out.(*Resp), nil
}

// Calls is not served in process: DirectClient has no per-call cost to
// save.
func (c *DirectClient) Calls(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[qtfsv1.CallFrame, qtfsv1.CallFrame], error) {
	return nil, status.Error(codes.Unimplemented, "hostfs: DirectClient: Calls is not served in process")
}

// Handshake calls Server.Handshake.
func (c *DirectClient) Handshake(ctx context.Context, in *qtfsv1.HandshakeRequest, _ ...grpc.CallOption) (*qtfsv1.HandshakeResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Handshake_FullMethodName, in, c.s.Handshake)
}

// Mount calls Server.Mount.
func (c *DirectClient) Mount(ctx context.Context, in *qtfsv1.MountRequest, _ ...grpc.CallOption) (*qtfsv1.MountResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Mount_FullMethodName, in, c.s.Mount)
}

// Lookup calls Server.Lookup.
func (c *DirectClient) Lookup(ctx context.Context, in *qtfsv1.LookupRequest, _ ...grpc.CallOption) (*qtfsv1.EntryResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Lookup_FullMethodName, in, c.s.Lookup)
}

// Getattr calls Server.Getattr.
func (c *DirectClient) Getattr(ctx context.Context, in *qtfsv1.GetattrRequest, _ ...grpc.CallOption) (*qtfsv1.AttrResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Getattr_FullMethodName, in, c.s.Getattr)
}

// Setattr calls Server.Setattr.
func (c *DirectClient) Setattr(ctx context.Context, in *qtfsv1.SetattrRequest, _ ...grpc.CallOption) (*qtfsv1.AttrResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Setattr_FullMethodName, in, c.s.Setattr)
}

// Readlink calls Server.Readlink.
func (c *DirectClient) Readlink(ctx context.Context, in *qtfsv1.ReadlinkRequest, _ ...grpc.CallOption) (*qtfsv1.ReadlinkResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Readlink_FullMethodName, in, c.s.Readlink)
}

// Symlink calls Server.Symlink.
func (c *DirectClient) Symlink(ctx context.Context, in *qtfsv1.SymlinkRequest, _ ...grpc.CallOption) (*qtfsv1.EntryResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Symlink_FullMethodName, in, c.s.Symlink)
}

// Mknod calls Server.Mknod.
func (c *DirectClient) Mknod(ctx context.Context, in *qtfsv1.MknodRequest, _ ...grpc.CallOption) (*qtfsv1.EntryResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Mknod_FullMethodName, in, c.s.Mknod)
}

// Mkdir calls Server.Mkdir.
func (c *DirectClient) Mkdir(ctx context.Context, in *qtfsv1.MkdirRequest, _ ...grpc.CallOption) (*qtfsv1.EntryResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Mkdir_FullMethodName, in, c.s.Mkdir)
}

// Unlink calls Server.Unlink.
func (c *DirectClient) Unlink(ctx context.Context, in *qtfsv1.UnlinkRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Unlink_FullMethodName, in, c.s.Unlink)
}

// Rmdir calls Server.Rmdir.
func (c *DirectClient) Rmdir(ctx context.Context, in *qtfsv1.RmdirRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Rmdir_FullMethodName, in, c.s.Rmdir)
}

// Rename calls Server.Rename.
func (c *DirectClient) Rename(ctx context.Context, in *qtfsv1.RenameRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Rename_FullMethodName, in, c.s.Rename)
}

// Link calls Server.Link.
func (c *DirectClient) Link(ctx context.Context, in *qtfsv1.LinkRequest, _ ...grpc.CallOption) (*qtfsv1.EntryResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Link_FullMethodName, in, c.s.Link)
}

// Open calls Server.Open.
func (c *DirectClient) Open(ctx context.Context, in *qtfsv1.OpenRequest, _ ...grpc.CallOption) (*qtfsv1.OpenResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Open_FullMethodName, in, c.s.Open)
}

// Create calls Server.Create.
func (c *DirectClient) Create(ctx context.Context, in *qtfsv1.CreateRequest, _ ...grpc.CallOption) (*qtfsv1.CreateResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Create_FullMethodName, in, c.s.Create)
}

// Read calls Server.Read.
func (c *DirectClient) Read(ctx context.Context, in *qtfsv1.ReadRequest, _ ...grpc.CallOption) (*qtfsv1.ReadResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Read_FullMethodName, in, c.s.Read)
}

// Write calls Server.Write.
func (c *DirectClient) Write(ctx context.Context, in *qtfsv1.WriteRequest, _ ...grpc.CallOption) (*qtfsv1.WriteResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Write_FullMethodName, in, c.s.Write)
}

// Flush calls Server.Flush.
func (c *DirectClient) Flush(ctx context.Context, in *qtfsv1.FlushRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Flush_FullMethodName, in, c.s.Flush)
}

// Fsync calls Server.Fsync.
func (c *DirectClient) Fsync(ctx context.Context, in *qtfsv1.FsyncRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Fsync_FullMethodName, in, c.s.Fsync)
}

// Release calls Server.Release.
func (c *DirectClient) Release(ctx context.Context, in *qtfsv1.ReleaseRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Release_FullMethodName, in, c.s.Release)
}

// Readdir calls Server.Readdir.
func (c *DirectClient) Readdir(ctx context.Context, in *qtfsv1.ReaddirRequest, _ ...grpc.CallOption) (*qtfsv1.ReaddirResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Readdir_FullMethodName, in, c.s.Readdir)
}

// Statfs calls Server.Statfs.
func (c *DirectClient) Statfs(ctx context.Context, in *qtfsv1.StatfsRequest, _ ...grpc.CallOption) (*qtfsv1.StatfsResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Statfs_FullMethodName, in, c.s.Statfs)
}

// MountOnHost calls Server.MountOnHost.
func (c *DirectClient) MountOnHost(ctx context.Context, in *qtfsv1.MountOnHostRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_MountOnHost_FullMethodName, in, c.s.MountOnHost)
}

// UnmountOnHost calls Server.UnmountOnHost.
func (c *DirectClient) UnmountOnHost(ctx context.Context, in *qtfsv1.UnmountOnHostRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_UnmountOnHost_FullMethodName, in, c.s.UnmountOnHost)
}

// Getxattr calls Server.Getxattr.
func (c *DirectClient) Getxattr(ctx context.Context, in *qtfsv1.GetxattrRequest, _ ...grpc.CallOption) (*qtfsv1.GetxattrResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Getxattr_FullMethodName, in, c.s.Getxattr)
}

// Setxattr calls Server.Setxattr.
func (c *DirectClient) Setxattr(ctx context.Context, in *qtfsv1.SetxattrRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Setxattr_FullMethodName, in, c.s.Setxattr)
}

// Listxattr calls Server.Listxattr.
func (c *DirectClient) Listxattr(ctx context.Context, in *qtfsv1.ListxattrRequest, _ ...grpc.CallOption) (*qtfsv1.ListxattrResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Listxattr_FullMethodName, in, c.s.Listxattr)
}

// Removexattr calls Server.Removexattr.
func (c *DirectClient) Removexattr(ctx context.Context, in *qtfsv1.RemovexattrRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Removexattr_FullMethodName, in, c.s.Removexattr)
}

// Fallocate calls Server.Fallocate.
func (c *DirectClient) Fallocate(ctx context.Context, in *qtfsv1.FallocateRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Fallocate_FullMethodName, in, c.s.Fallocate)
}

// Lseek calls Server.Lseek.
func (c *DirectClient) Lseek(ctx context.Context, in *qtfsv1.LseekRequest, _ ...grpc.CallOption) (*qtfsv1.LseekResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Lseek_FullMethodName, in, c.s.Lseek)
}

// CopyFileRange calls Server.CopyFileRange.
func (c *DirectClient) CopyFileRange(ctx context.Context, in *qtfsv1.CopyFileRangeRequest, _ ...grpc.CallOption) (*qtfsv1.CopyFileRangeResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_CopyFileRange_FullMethodName, in, c.s.CopyFileRange)
}

// Getlk calls Server.Getlk.
func (c *DirectClient) Getlk(ctx context.Context, in *qtfsv1.GetlkRequest, _ ...grpc.CallOption) (*qtfsv1.GetlkResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Getlk_FullMethodName, in, c.s.Getlk)
}

// Setlk calls Server.Setlk.
func (c *DirectClient) Setlk(ctx context.Context, in *qtfsv1.SetlkRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Setlk_FullMethodName, in, c.s.Setlk)
}

// Mounts calls Server.Mounts.
func (c *DirectClient) Mounts(ctx context.Context, in *qtfsv1.MountsRequest, _ ...grpc.CallOption) (*qtfsv1.MountsResponse, error) {
	return call(c, ctx, qtfsv1.FileSystem_Mounts_FullMethodName, in, c.s.Mounts)
}
